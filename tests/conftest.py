"""Shared fixtures: a real nats-server per test and the service running in-process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings, load_settings
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.observability.tracing import setup_tracing

# Tests never reach a real hub, whatever the developer's environment says.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A real nats-server with JetStream on a random loopback port."""
    server = EmbeddedNatsServer(tmp_path / "nats", port=-1)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, nats_url: str) -> Settings:
    return load_settings({}).with_(
        nats_url=nats_url,
        cache_dir=tmp_path / "cache",
        instance="test-instance",
        backends=("piper", "chatterbox", "xtts", "higgs"),
        metrics_port=0,
        allow_download=False,
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False)
    yield client
    await client.close()


@pytest.fixture
async def client(nc: Client) -> TtsClient:
    return TtsClient(nc, timeout_s=60, retry_policy=None)  # the service's own answers; retries: test_liveness.py


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[TtsApp]:
    app = TtsApp(settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def piper_loaded(app: TtsApp) -> TtsApp:
    """The service with Piper loaded (waited on the state event, not polled)."""
    assert app.registry is not None
    state = await app.registry.actors["piper"].wait_settled(30)
    assert state.value == "loaded", app.registry.actors["piper"].status()
    return app


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """One in-memory exporter for the session: the global tracer provider can be set only once."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):  # someone installed one already: add to it
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        setup_tracing(extra_processor=SimpleSpanProcessor(exporter))
    return exporter
