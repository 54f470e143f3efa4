"""Test helpers shared by the service tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import shlex
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client

from statemachine import State
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.backends.piper import PiperBackend
from tts_actor.config import Settings
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.wire.messages import SynthesisRequest


@dataclass(frozen=True)
class WavInfo:
    channels: int
    sample_width: int
    sample_rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def wav_info(data: bytes) -> WavInfo:
    with wave.open(io.BytesIO(data), "rb") as w:
        return WavInfo(w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())


class GatedPiper(PiperBackend):
    """The real Piper backend under another name, whose load and synthesis wait for a gate.

    Lets a test hold a backend in ``missing`` (loading) or hold its worker busy, with
    nothing faked about the model itself.
    """

    def __init__(self, settings: Settings, name: str = "gated") -> None:
        super().__init__(settings)
        self.spec = PiperBackend.spec.__class__(**{**PiperBackend.spec.__dict__, "name": name})
        self.load_gate = threading.Event()
        self.synth_gate = threading.Event()
        self.synth_gate.set()
        self.synth_started = threading.Event()

    def voices(self) -> list[Voice]:
        return [Voice(v.id, v.language, self.name, v.description) for v in super().voices()]

    def load(self, model_dirs: dict[str, Path]) -> None:
        if not self.load_gate.wait(30):
            raise TimeoutError("test gate never opened")
        super().load(model_dirs)

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.synth_started.set()
        if not self.synth_gate.wait(30):
            raise TimeoutError("test gate never opened")
        return super().synthesize(request, voice)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 10.0,
    interval_s: float = 0.01,
    explain: Callable[[], object] | None = None,
) -> None:
    """Test-side sync on a condition the service exposes no event for (its queue length, say).

    ``condition`` may be a coroutine function (a request, a store read): give those a longer
    ``interval_s``. Checks often and fails loudly at the bound, with ``explain()`` in the message;
    the service itself never waits like this.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            detail = f": {explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout_s} s{detail}")
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, gated: GatedPiper, **changes: object
) -> AsyncIterator[tuple[TtsApp, BackendActor]]:
    """The service with ``gated`` (load gate open) and any other backends, all loaded; gates opened on exit."""
    gated.load_gate.set()
    changes.setdefault("backends", (gated.name,))
    app = TtsApp(settings.with_(**changes), adapters={gated.name: gated})
    await app.start()
    try:
        assert app.registry is not None
        for actor in app.registry.actors.values():
            assert await actor.wait_settled(30) is State.LOADED, actor.status()
        yield app, app.registry.actors[gated.name]
    finally:
        gated.synth_gate.set()
        await app.stop()


async def raw_request(nc: Client, payload: bytes, subject: str = "tts.synthesize") -> tuple[dict, bytes]:
    """A request as any NATS client sends it: bytes in, the reply's headers and body out."""
    msg = await nc.request(subject, payload, timeout=10)
    return dict(msg.headers or {}), msg.data


def torch_install_fix_start(extra: str) -> str:
    """How a torch backend's install fix starts: CPU torch by this interpreter's pip, then the extra (no CUDA)."""
    py = shlex.quote(sys.executable)
    cpu = "https://download.pytorch.org/whl/cpu"
    return f"{py} -m pip install --index-url {cpu} torch && {py} -m pip install -e '.[{extra}]' --extra-index-url {cpu}"
