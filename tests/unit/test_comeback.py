"""``retry_after_ms`` on ``busy`` follows the backend's measured pace: a refused burst comes back staggered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.backends import isolated_settings
from tts_actor.audio.segmenter import Segment
from tts_actor.backends.base import Voice
from tts_actor.backends.piper import PiperBackend
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.comeback import (
    RETRY_AFTER_MAX_MS,
    RETRY_AFTER_MIN_MS,
    UNMEASURED_JOB_S,
    ComebackSchedule,
    drain_ms,
    job_pace_s,
)
from tts_actor.lifecycle.job_runner import ActorStats
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.wire.messages import SynthesisRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pace_is_seconds_per_job_over_workers_with_a_guess_before_the_first() -> None:
    assert job_pace_s(0.3, 1) == 0.3
    assert job_pace_s(0.3, 3) == pytest.approx(0.1)
    assert job_pace_s(None, 2) == UNMEASURED_JOB_S / 2
    assert drain_ms(8, 0.25, 1) == 2000
    assert drain_ms(8, 0.25, 4) == 500
    assert drain_ms(1, 0.001, 1) == RETRY_AFTER_MIN_MS
    assert drain_ms(1000, 2.0, 1) == RETRY_AFTER_MAX_MS


def test_a_burst_is_told_successive_slots_one_job_apart() -> None:
    clock = Clock()
    schedule = ComebackSchedule(clock)
    told = [schedule.retry_after_ms(0.25, 1) for _ in range(5)]
    assert told == [250, 500, 750, 1000, 1250]
    clock.now += 1.0  # one second on: the schedule's next slot is 0.5 s away, not 1.5 s
    assert schedule.retry_after_ms(0.25, 1) == 500
    clock.now += 60.0  # a quiet minute: the next refusal starts a fresh schedule
    assert schedule.retry_after_ms(0.25, 1) == 250


def test_the_schedule_stops_at_the_horizon() -> None:
    schedule = ComebackSchedule(Clock())
    told = [schedule.retry_after_ms(2.0, 1) for _ in range(10)]
    assert told[:5] == [2000, 4000, 6000, 8000, 10_000]
    assert told[5:] == [RETRY_AFTER_MAX_MS] * 5


def test_seconds_per_job_is_measured_from_finished_jobs() -> None:
    stats = ActorStats()
    assert stats.seconds_per_job is None
    stats.syntheses, stats.job_s = 4, 1.0
    assert stats.seconds_per_job == 0.25


class Sink:
    async def accept(self, segment: Segment, audio: object) -> None:
        raise AssertionError("nothing is served in this test")


async def test_a_full_inbox_refuses_with_staggered_slots_at_the_measured_pace(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path).with_(backend_queue_depth=2)
    actor = BackendActor(PiperBackend(settings), settings, None, lambda _event: None)
    actor.stats.syntheses, actor.stats.job_s = 10, 4.0  # measured: 0.4 s a job
    loop = asyncio.get_running_loop()
    try:

        def job(i: int) -> SynthesisJob:
            request = SynthesisRequest(text=f"Job {i}.")
            control = JobControl(f"r{i}")
            return SynthesisJob(request, Voice("v", "en", "piper"), [], Sink(), control, loop.create_future())

        actor.runner.put(job(0))
        actor.runner.put(job(1))
        refused: list[TtsError] = []
        for i in range(2, 5):
            with pytest.raises(TtsError) as info:
                actor.runner.put(job(i))
            refused.append(info.value)
    finally:
        actor.engine.worker.shutdown(wait=True)
    assert all(e.code is ErrorCode.BUSY and "2 requests queued" in e.message for e in refused)
    slots = [e.retry_after_ms for e in refused]
    assert slots[0] == pytest.approx(400, abs=5)
    assert slots[1] == pytest.approx(800, abs=5) and slots[2] == pytest.approx(1200, abs=5)
    assert actor.retry_after_ms() == pytest.approx(1600, abs=20)  # the endpoint's own refusals: the next slot
