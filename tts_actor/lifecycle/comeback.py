"""When a refused caller should come back: the queue's measured pace, staggered across a burst (pure, no I/O).

A constant ``retry_after_ms`` sends a whole refused burst back in step, to be refused again:
thousands of retries for the same work. Here the refusals of one backend share a schedule: the
first is told to come back when the worker has finished one job (a place in the queue is free),
each next one a job's time after the previous, so the burst returns at the pace the backend
serves it. A job's time is the backend's measured wall seconds per job divided by its workers;
every answer is clamped to [RETRY_AFTER_MIN_MS, RETRY_AFTER_MAX_MS].
"""

from __future__ import annotations

import time
from collections.abc import Callable

RETRY_AFTER_MIN_MS = 100
RETRY_AFTER_MAX_MS = 10_000
UNMEASURED_JOB_S = 0.5  # before the first job finishes: a guess of the right order for Piper on a CPU


def job_pace_s(seconds_per_job: float | None, workers: int) -> float:
    """Seconds between two job ends while the queue is full: a job's time spread over the workers."""
    per_job = seconds_per_job if seconds_per_job and seconds_per_job > 0 else UNMEASURED_JOB_S
    return per_job / max(1, workers)


def drain_ms(waiting: int, seconds_per_job: float | None, workers: int) -> int:
    """How long ``waiting`` jobs take to leave the queue, clamped: what one refused caller is told."""
    return clamp_ms(waiting * job_pace_s(seconds_per_job, workers) * 1000)


def clamp_ms(ms: float) -> int:
    return int(min(RETRY_AFTER_MAX_MS, max(RETRY_AFTER_MIN_MS, round(ms))))


class ComebackSchedule:
    """Staggered ``retry_after_ms`` for one backend's refusals: the k-th of a burst returns k job-times later."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next_at = 0.0  # clock time of the next free comeback slot

    def retry_after_ms(self, seconds_per_job: float | None, workers: int) -> int:
        """Milliseconds until this caller's slot; takes the slot, so the next caller is told a later one."""
        now = self._clock()
        pace = job_pace_s(seconds_per_job, workers)
        horizon = now + RETRY_AFTER_MAX_MS / 1000
        at = min(max(now + pace, self._next_at), horizon)  # past the horizon everyone shares the last slot
        self._next_at = min(at + pace, horizon)
        return clamp_ms((at - now) * 1000)
