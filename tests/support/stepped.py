"""Real Piper whose engine calls go one step at a time, and hand-made jobs for an actor's inbox.

Not a stand-in: the model is the real joe voice. Each ``synthesize`` call records its text, says
it has entered, then waits for the test to release one step, so a test decides exactly when each
segment may run and sees the order the actor's scheduler chose.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from statemachine import State
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.backends import Voice
from tts_actor.backends.piper import PiperBackend
from tts_actor.config import Settings
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.wire.messages import Priority, SynthesisRequest


class SteppedPiper(PiperBackend):
    """The real Piper backend; each synthesis waits for :meth:`step` (or runs at once after :meth:`run_freely`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: list[str] = []  # the text of each engine call, in the order they ran
        self.entered = threading.Semaphore(0)
        self._steps = threading.Semaphore(0)
        self._free = threading.Event()

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.calls.append(request.text)
        self.entered.release()
        if not self._free.is_set() and not self._steps.acquire(timeout=30):
            raise TimeoutError("the test never released this step")
        return super().synthesize(request, voice)

    def step(self, count: int = 1) -> None:
        for _ in range(count):
            self._steps.release()

    def run_freely(self, free: bool = True) -> None:
        if free:
            self._free.set()
            self.step(100)
        else:  # held again: steps and entries left over from running freely are forgotten
            self._free.clear()
            while self._steps.acquire(blocking=False):
                pass
            while self.entered.acquire(blocking=False):
                pass

    async def wait_entered(self, timeout_s: float = 30.0) -> None:
        """Until the next engine call has begun (it then waits for its step)."""
        if not await asyncio.to_thread(self.entered.acquire, True, timeout_s):
            raise AssertionError(f"no engine call began within {timeout_s} s; calls so far: {self.calls}")


@dataclass
class RecordingSink:
    """Takes each segment's audio and notes which job's segment it was."""

    label: str
    log: list[str]
    seconds: list[float] = field(default_factory=list)

    async def accept(self, segment: Segment, audio: Audio) -> None:
        self.log.append(f"{self.label}{segment.index}")
        self.seconds.append(audio.duration_s)


def make_job(
    actor: BackendActor,
    label: str,
    texts: list[str],
    log: list[str],
    priority: Priority = Priority.NORMAL,
    deadline_ms: int | None = None,
) -> SynthesisJob:
    """A job of ``texts`` (one segment each) for ``actor``'s default English voice."""
    voice = actor.adapter.default_voice("en")
    assert voice is not None
    request = SynthesisRequest(text=" ".join(texts), priority=priority, deadline_ms=deadline_ms)
    segments = [Segment(i, text, 0, len(text)) for i, text in enumerate(texts)]
    control = JobControl(label, deadline_ms=deadline_ms)
    if deadline_ms is not None:
        control.deadline = time.monotonic() + deadline_ms / 1000
    future = asyncio.get_running_loop().create_future()
    return SynthesisJob(request, voice, segments, RecordingSink(label, log), control, future)


async def started_actor(adapter: PiperBackend, settings: Settings) -> BackendActor:
    """``adapter`` in an actor of its own (no NATS: the inbox and the engine are what is tested), loaded."""
    actor = BackendActor(adapter, settings, None, lambda event: None)
    await actor.start()
    assert await actor.wait_settled(60) is State.LOADED, actor.status()
    return actor


def settings_for(tmp_path: Path, **changes: object) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", allow_download=False, instance="test", backends=("piper",)).with_(
        **changes
    )
