"""The priority inbox's rule (pure, on a clock the test moves) and the client's retry of deadline_unreachable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tts_actor.audio.segmenter import Segment
from tts_actor.backends import Voice
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.lifecycle.scheduling import PriorityInbox
from tts_actor.lifecycle.wait_estimate import estimate_first_audio
from tts_actor.wire.messages import Priority, SynthesisRequest
from tts_actor.wire.request_parsing import parse_synthesis_request


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _job(name: str, priority: Priority, segments: int = 1) -> SynthesisJob:
    request = SynthesisRequest(text=name, priority=priority)
    parts = [Segment(i, name, 0, len(name)) for i in range(segments)]
    nothing: Any = None  # the inbox never touches a job's sink or future
    return SynthesisJob(request, Voice("v", "en", "piper"), parts, nothing, JobControl(name), nothing)


def _order(inbox: PriorityInbox, clock: Clock, step_s: float = 0.1) -> list[str]:
    """Take every job one segment at a time, putting back those with segments left."""
    taken: list[str] = []
    while not inbox.empty():
        job, place = inbox.get_nowait()
        taken.append(f"{job.request.text}{job.next_segment}")
        job.next_segment += 1
        clock.now += step_s
        inbox.served(job.priority)
        if job.next_segment < len(job.segments):
            inbox.requeue(job, place)
    return taken


def test_higher_classes_first_and_a_started_job_keeps_its_place() -> None:
    clock = Clock()
    inbox = PriorityInbox("piper", 10, ageing_s=60, clock=clock)
    for job in (_job("b", Priority.BULK, 2), _job("c", Priority.BULK), _job("n", Priority.NORMAL)):
        inbox.put_nowait(job)
    first, _place = inbox.get_nowait()
    assert first.request.text == "n"
    inbox.put_nowait(_job("i", Priority.INTERACTIVE, 2))
    assert _order(inbox, clock) == ["i0", "i1", "b0", "b1", "c0"]
    assert inbox.stats[Priority.BULK].started == 2 and inbox.aged == 0


def test_a_class_waiting_past_the_ageing_bound_gets_one_segment() -> None:
    clock = Clock()
    inbox = PriorityInbox("piper", 100, ageing_s=1.0, clock=clock)
    inbox.put_nowait(_job("b", Priority.BULK, 3))
    for k in range(30):
        inbox.put_nowait(_job(f"i{k}-", Priority.INTERACTIVE))
    order = _order(inbox, clock, step_s=0.25)
    bulk = [i for i, label in enumerate(order) if label.startswith("b")]
    assert len(bulk) == 3 and bulk[-1] < 20  # not after all the interactive work: one segment a second
    assert bulk[1] - bulk[0] >= 3  # and interactive work between them
    assert inbox.aged == 3


def test_a_class_whose_own_segments_are_slow_is_not_starved_by_them() -> None:
    """Ageing counts the time a class waits for others, not the time its own segments take."""
    clock = Clock()
    inbox = PriorityInbox("piper", 10, ageing_s=1.0, clock=clock)
    for name in ("a", "b"):
        inbox.put_nowait(_job(name, Priority.NORMAL))
    job, _ = inbox.get_nowait()
    inbox.put_nowait(_job("i", Priority.INTERACTIVE))
    clock.now += 5.0  # the normal segment took far longer than the ageing bound
    inbox.served(job.priority)
    assert inbox.get_nowait()[0].request.text == "i" and inbox.aged == 0


def test_the_depth_limit_is_for_new_jobs_and_drain_can_leave_started_ones() -> None:
    clock = Clock()
    inbox = PriorityInbox("piper", 1, ageing_s=2, clock=clock)
    started = _job("s", Priority.BULK, 2)
    inbox.put_nowait(started)
    job, place = inbox.get_nowait()
    job.next_segment = 1
    inbox.put_nowait(_job("x", Priority.NORMAL))
    inbox.requeue(job, place)  # never refused, though the inbox is at its depth
    with pytest.raises(asyncio.QueueFull):
        inbox.put_nowait(_job("y", Priority.NORMAL))
    assert [j.request.text for j in inbox.drain(started_too=False)] == ["x"]
    assert inbox.qsize() == 1 and inbox.depths()["bulk"]["queued"] == 1


def test_priority_is_parsed_strictly() -> None:
    settings = Settings()
    assert parse_synthesis_request(b'{"text": "a", "priority": "bulk"}', settings).priority is Priority.BULK
    assert parse_synthesis_request(b'{"text": "a"}', settings).priority is Priority.NORMAL
    with pytest.raises(TtsError, match="'priority' must be one of interactive, normal, bulk"):
        parse_synthesis_request(b'{"text": "a", "priority": "urgent"}', settings)
    request = SynthesisRequest(text="a", priority=Priority.INTERACTIVE)
    assert parse_synthesis_request(request.to_json(), settings).priority is Priority.INTERACTIVE


def test_the_client_retries_deadline_unreachable_only_within_its_own_deadline() -> None:
    client = TtsClient(nc=None, retry_budget=None)  # type: ignore[arg-type]  # no request is sent here
    refusal = TtsError(ErrorCode.DEADLINE_UNREACHABLE, "late", "elsewhere", retry_after_ms=400)
    soon = client._retry_delay(refusal, 0, time.monotonic() + 10)
    assert soon is not None and 0.4 <= soon <= 10
    assert client._retry_delay(refusal, 0, time.monotonic() + 0.45) is None  # no time left after the wait
    unpaced = TtsError(ErrorCode.DEADLINE_UNREACHABLE, "late", "elsewhere")
    assert client._retry_delay(unpaced, 0, time.monotonic() + 10) is None


def _estimated(name: str, priority: Priority, seconds: list[float], done: int = 0) -> SynthesisJob:
    job = _job(name, priority, len(seconds))
    job.audio_estimate_s, job.next_segment = seconds, done  # what the adapter's spoken_cost gave
    return job


def test_the_wait_is_the_work_ahead_at_the_measured_pace() -> None:
    adapter: Any = None  # every job's audio estimate is already known
    new = _estimated("new", Priority.NORMAL, [2.0, 9.0])
    ahead = [_estimated("q", Priority.NORMAL, [4.0, 4.0, 4.0], done=1)]  # two segments left
    running = [
        (_estimated("r", Priority.BULK, [3.0, 100.0]), 0.1),  # bulk: only its segment in the engine is ahead
        (_estimated("s", Priority.INTERACTIVE, [1.0, 1.0]), 0.0),  # higher: its rest goes first too
    ]
    assert estimate_first_audio(new, ahead, running, None, 1, adapter) is None  # no pace measured yet
    estimate = estimate_first_audio(new, ahead, running, 0.5, 2, adapter)
    assert estimate is not None
    ahead_engine_s = 8.0 * 0.5 + (3.0 * 0.5 - 0.1) + (1.0 * 0.5) + 1.0 * 0.5
    assert estimate.first_audio_s == pytest.approx(ahead_engine_s / 2 + 2.0 * 0.5)
    assert (estimate.ahead_jobs, estimate.ahead_segments, estimate.ahead_audio_s) == (3, 5, 13.0)
    assert estimate.to_detail()["estimated_first_audio_ms"] == round(estimate.first_audio_s * 1000)
