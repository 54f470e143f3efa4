"""/metrics, /healthz and /readyz over HTTP, from a started TtsApp on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from statemachine import State
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.nats_edge.connection import connect
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.messages import SynthesisRequest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def get(port: int, path: str) -> tuple[int, str]:
    """GET off the event loop: /readyz is answered by the loop this test runs on."""

    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    return await asyncio.to_thread(fetch)


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
async def nats_url(tmp_path: Path):
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", port=-1)
    url = await asyncio.to_thread(server.start)
    yield url
    await asyncio.to_thread(server.stop)


async def test_probes_and_metrics_follow_the_backends(nats_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings({}).with_(
        nats_url=nats_url, backends=("piper", "chatterbox"), cache_dir=tmp_path, metrics_port=port
    )
    app = TtsApp(settings)
    await app.start()
    try:
        assert app.registry is not None
        assert await app.registry.actors["piper"].wait_settled(30) is State.LOADED
        await app.registry.actors["chatterbox"].wait_settled(5)

        status, body = await get(port, "/healthz")
        assert status == 200 and json.loads(body)["status"] == "alive"
        status, body = await get(port, "/readyz")
        ready = json.loads(body)
        assert status == 200
        assert ready["loaded"] == ["piper"] and ready["states"]["chatterbox"] == "failed"
        assert (await get(port, "/nope"))[0] == 404

        _, before = await get(port, "/metrics")
        assert 'tts_backend_state{backend="chatterbox",state="failed"} 1.0' in before
        assert 'tts_backend_state{backend="piper",state="loaded"} 1.0' in before
        ok_before = sample(before, "tts_requests_total", 'backend="piper",outcome="ok"')

        nc = await connect(nats_url, "probe-test", reconnect=False)
        try:
            reply = await TtsClient(nc).synthesize(SynthesisRequest(text="Ready and measured."))
        finally:
            await nc.close()
        assert reply.backend == "piper" and len(reply.audio) > 1000

        _, after = await get(port, "/metrics")
        assert sample(after, "tts_requests_total", 'backend="piper",outcome="ok"') == ok_before + 1
    finally:
        await app.stop()
    with pytest.raises(OSError):  # stopped with the app: the port is released, nothing answers
        await get(port, "/healthz")


async def test_readyz_is_503_when_no_backend_loads(nats_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings({}).with_(nats_url=nats_url, backends=("mms",), cache_dir=tmp_path, metrics_port=port)
    app = TtsApp(settings)
    await app.start()
    try:
        assert app.registry is not None
        assert await app.registry.actors["mms"].wait_settled(5) is State.FAILED
        status, body = await get(port, "/readyz")
        assert status == 503
        assert json.loads(body)["states"] == {"mms": "failed"}
        assert (await get(port, "/healthz"))[0] == 200  # alive, just not ready
    finally:
        await app.stop()
