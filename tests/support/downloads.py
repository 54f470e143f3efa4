"""Shared pieces for the download tests: a tiny test backend, its repository, and an event log.

The real model backends need multi-GB weights that cannot be fetched here, so the
tests use :class:`TinyVoiceBackend`: a real :class:`BackendAdapter` whose model is
a small repository on the fake hub. Its ``load`` reads the downloaded files and
checks them (a JSON config naming the weights' sha256, and the weights blob), so
a truncated or unverified download would fail the load, not pass silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from statemachine import Reason, State, StateEvent
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.config import Settings
from tts_actor.wire.messages import SynthesisRequest

BACKEND = "tinyvoice"
REPO = "test-org/tiny-voice"
WEIGHTS = os.urandom(300_000)
REPO_FILES = {
    "config.json": json.dumps({"sample_rate": 16000, "weights_sha256": hashlib.sha256(WEIGHTS).hexdigest()}).encode(),
    "model.safetensors": WEIGHTS,
    "vocab.json": b'{"a": 1, "b": 2}',
}
REPO_BYTES = sum(len(v) for v in REPO_FILES.values())

SPEC = BackendSpec(
    name=BACKEND,
    extra="dev",
    packages=("json",),
    languages=("en",),
    sample_rate=16000,
    device=Device.CPU,
    approx_memory_mb=1,
    description="test backend whose model is a small repository on the fake hub",
)


class TinyVoiceBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.loaded_from: Path | None = None

    def voices(self) -> list[Voice]:
        return [Voice("tiny-en", "en", self.name)]

    def models(self) -> tuple[ModelRef, ...]:
        return (ModelRef(self.settings.repo_overrides.get(BACKEND, REPO)),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        folder = model_dirs["default"]
        config = json.loads((folder / "config.json").read_text())
        weights = (folder / "model.safetensors").read_bytes()
        if hashlib.sha256(weights).hexdigest() != config["weights_sha256"]:
            raise ValueError("weights do not match config.json")
        self.loaded_from = folder

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        return Audio(b"\0\0" * 1600, 16000)

    def unload(self) -> None:
        self.loaded_from = None


def make_settings(cache_dir: Path, endpoint: str, **changes: object) -> Settings:
    """Small bounds for tests; automatic retries off unless a test turns them on."""
    base = Settings(
        cache_dir=cache_dir,
        hf_endpoint=endpoint,
        backends=(BACKEND,),
        instance="test",
        download_connect_timeout_s=1.0,
        download_read_timeout_s=1.0,
        download_stall_timeout_s=5.0,
        download_total_timeout_s=30.0,
        retry_backoff_initial_s=0.2,
        retry_backoff_max_s=1.0,
        retry_max_attempts=0,
        startup_timeout_s=10.0,
    )
    return base.with_(**changes)


class EventLog:
    """Collects state events (the registry's ``on_event``) and lets a test await one, woken by events."""

    def __init__(self) -> None:
        self.events: list[StateEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: StateEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def until(self, predicate: Callable[[StateEvent], bool], timeout_s: float) -> StateEvent:
        """The first event (past or future) matching ``predicate``; TimeoutError after ``timeout_s``."""
        return await asyncio.wait_for(self._first(predicate), timeout_s)

    async def _first(self, predicate: Callable[[StateEvent], bool]) -> StateEvent:
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            self._changed.clear()
            await self._changed.wait()

    async def until_state(self, state: State, timeout_s: float) -> StateEvent:
        return await self.until(lambda e: e.to_state is state and e.reason is not Reason.DOWNLOAD_PROGRESS, timeout_s)

    def moves(self) -> list[tuple[str, str]]:
        """(to_state, reason) of every event but progress."""
        return [(e.to_state.value, e.reason.value) for e in self.events if e.reason is not Reason.DOWNLOAD_PROGRESS]

    def progress(self) -> list[StateEvent]:
        return [e for e in self.events if e.reason is Reason.DOWNLOAD_PROGRESS]


def files_under(path: Path) -> list[Path]:
    """Every file (or symlink) under ``path``, for 'nothing partial was left' checks."""
    return sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()) if path.exists() else []
