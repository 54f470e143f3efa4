"""Helpers for the backend tests: WAV bytes, stand-in modules, and a running service on a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import struct
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from statemachine import State, StateEvent
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.backends import BackendAdapter
from tts_actor.backends.piper import PiperBackend, discover_voices
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer


def tone_wav(seconds: float, rate: int = 16000, hz: float = 220.0) -> bytes:
    """A mono 16-bit WAV of a sine tone: valid reference audio of a chosen length."""
    count = int(seconds * rate)
    samples = (int(12000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(count))
    return Audio(struct.pack(f"<{count}h", *samples), rate).to_wav()


def install_stand_in(monkeypatch: pytest.MonkeyPatch, name: str, **attributes: Any) -> types.ModuleType:
    """Put a module object named ``name`` into ``sys.modules`` (and onto its parent) for this test only."""
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, name, module)
    parent, _, child = name.rpartition(".")
    if parent:
        monkeypatch.setattr(sys.modules[parent], child, module, raising=False)
    return module


def isolated_settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings that touch nothing outside ``tmp_path`` and never download."""
    return Settings(cache_dir=tmp_path / "cache", allow_download=False, instance="test").with_(**changes)


@contextlib.asynccontextmanager
async def running_service(
    tmp_path: Path, settings: Settings, adapters: dict[str, BackendAdapter] | None = None
) -> AsyncIterator[tuple[TtsApp, TtsClient]]:
    """The real service on a real embedded NATS server, and a client connected to it."""
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", port=-1)
    url = await asyncio.to_thread(server.start)
    app = TtsApp(settings.with_(nats_url=url), adapters=adapters)
    nc = None
    try:
        await app.start()
        nc = await nats.connect(url)
        yield app, TtsClient(nc, timeout_s=60, retry_policy=None)
    finally:
        if nc is not None:
            await nc.close()
        await app.stop()
        await asyncio.to_thread(server.stop)


async def next_state(app: TtsApp, backend: str, wanted: State, timeout_s: float = 10.0) -> StateEvent:
    """Wait, on transition events, until ``backend`` enters ``wanted``."""
    assert app.registry is not None
    lifecycle = app.registry.actors[backend].lifecycle
    if lifecycle.current is wanted:
        return lifecycle.last_event
    future: asyncio.Future[StateEvent] = asyncio.get_running_loop().create_future()

    def listener(event: StateEvent) -> None:
        if event.to_state is wanted and not future.done():
            future.set_result(event)

    lifecycle.subscribe(listener)
    return await asyncio.wait_for(future, timeout_s)


def corrupt_piper(settings: Settings, folder: Path) -> PiperBackend:
    """Piper whose (only) voice has the right name and config but a model file that is not ONNX."""
    adapter = PiperBackend(settings)
    real = discover_voices(None)[0]
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / real.model.name
    model.write_bytes(b"this is not an onnx model" * 100)
    shutil.copy(real.config, folder / real.config.name)
    adapter._files = {real.voice_id: type(real)(real.voice_id, real.language, model, real.config, real.sample_rate)}
    return adapter
