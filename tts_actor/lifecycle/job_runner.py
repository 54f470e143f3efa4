"""The job inbox and its runners: one engine call per segment, the audio handed down into the job's sink.

A runner takes one segment at a time from the priority inbox (:mod:`.scheduling`) and puts the
job back after it, so waiting interactive work goes before a long bulk job's next segment. Before
each segment it checks the job's cancel flag and deadline, so a caller that gives up frees the
backend at the next boundary. A job with a deadline is refused at once when the measured pace
says its first audio would come too late (:mod:`.wait_estimate`). One TTS_SYNTHESIS_TIMEOUT_S covers the
whole job; an engine call that goes over it cannot be interrupted, so the job is answered
at once and the actor goes STUCK (new requests get ``busy``) until the call returns.
The runner keeps this actor's own totals (:class:`ActorStats`), independent of the
process-wide Prometheus samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry.trace import Status, StatusCode

from statemachine import BackendLifecycle, Reason
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import classify_load_error
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.lifecycle import refusals
from tts_actor.lifecycle.comeback import ComebackSchedule, clamp_ms
from tts_actor.lifecycle.engine import Engine
from tts_actor.lifecycle.jobs import SynthesisJob
from tts_actor.lifecycle.phase import Phase, PhaseState, is_ready
from tts_actor.lifecycle.scheduling import PriorityInbox
from tts_actor.lifecycle.supervision import Supervisor
from tts_actor.lifecycle.wait_estimate import estimate_first_audio
from tts_actor.observability import metrics
from tts_actor.observability.tracing import tracer

RTF_WEIGHT = 0.3  # of the newest segment in the recent real-time factor (the rest: the ones before)
SINK_BOUND_S = 5.0  # a sink that does not take a segment in this long is not waited for (the caller gave up)


@dataclass
class ActorStats:
    """This actor's totals since start: what ``$SRV.STATS`` reports per backend."""

    engine_calls: int = 0  # synthesize calls handed to the engine
    engine_s: float = 0.0  # seconds those calls took, for the ones that returned audio
    audio_s: float = 0.0  # seconds of audio they returned
    syntheses: int = 0  # jobs that ran to their last segment
    job_s: float = 0.0  # wall seconds those jobs held a worker (engine, encoding, handing the audio on)
    dropped_late: int = 0  # jobs whose deadline passed while they were queued

    recent_rtf: float | None = None  # engine seconds per audio second over recent segments (weighted, newest most)

    def record(self, engine_s: float, audio_s: float) -> None:
        """One engine call that returned ``audio_s`` of audio in ``engine_s``."""
        self.engine_s += engine_s
        self.audio_s += audio_s
        if audio_s > 0:
            rtf = engine_s / audio_s
            self.recent_rtf = rtf if self.recent_rtf is None else (1 - RTF_WEIGHT) * self.recent_rtf + RTF_WEIGHT * rtf

    @property
    def real_time_factor(self) -> float | None:
        """Engine seconds per second of audio (below 1 is faster than real time); None before any audio."""
        return round(self.engine_s / self.audio_s, 4) if self.audio_s > 0 else None

    @property
    def seconds_per_job(self) -> float | None:
        """Mean wall seconds a finished job held a worker; None before the first: what a refusal's pace is."""
        return self.job_s / self.syntheses if self.syntheses else None


class JobRunner:
    """The inbox of one backend and the runners (one per worker thread) that take segments from it."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        lifecycle: BackendLifecycle,
        phases: PhaseState,
        supervisor: Supervisor,
        inbox: PriorityInbox,
        touch: Callable[[], None],
        log: structlog.stdlib.BoundLogger,
        workers: int = 1,
    ) -> None:
        self._engine = engine
        self._name = engine.adapter.name
        self._settings = settings
        self._lifecycle = lifecycle
        self._phases = phases
        self._supervisor = supervisor
        self._touch = touch  # a job ended: the idle timer counts from now
        self._log = log
        self.inbox = inbox
        self.stats = ActorStats()
        self.workers = workers
        self.comebacks = ComebackSchedule()  # when the callers a full inbox refuses should come back
        self._abandoned = 0  # engine calls given up on that still hold a worker thread
        self.in_engine: dict[int, tuple[SynthesisJob, float]] = {}  # id(job) -> (job, perf_counter at its call)
        self.after_job: Callable[[], None] = lambda: None  # a job ended (done or answered): the memory guard looks

    def put(self, job: SynthesisJob) -> None:
        """Queue ``job``; raises ``busy`` at once when the inbox is full, ``deadline_unreachable`` when it is late."""
        if job.control.deadline is not None:
            self._admit_deadline(job)
        try:
            self.inbox.put_nowait(job)
        except asyncio.QueueFull:
            retry_after_ms = self.retry_after_ms()
            raise refusals.queue_full(self._name, self.inbox.qsize(), self._lifecycle.current, retry_after_ms) from None

    def _admit_deadline(self, job: SynthesisJob) -> None:
        """Refuse now a job whose first audio the measured pace says comes after its deadline."""
        assert job.control.deadline is not None
        now = time.perf_counter()
        running = [(j, now - at) for j, at in self.in_engine.values()]
        ahead = self.inbox.ahead_of(job.priority)
        estimate = estimate_first_audio(job, ahead, running, self.stats.recent_rtf, self.workers, self._engine.adapter)
        if estimate is None:
            return
        budget_s = job.control.deadline - time.monotonic()
        if estimate.first_audio_s <= budget_s:
            return
        metrics.DEADLINE_REFUSALS.labels(self._name, job.priority.value).inc()
        retry_after_ms = clamp_ms((estimate.first_audio_s - budget_s) * 1000)
        raise refusals.deadline_unreachable(self._name, self._lifecycle.current, estimate, budget_s, retry_after_ms)

    def retry_after_ms(self) -> int:
        """A refused caller's slot: paced by this backend's measured seconds per job over its workers."""
        return self.comebacks.retry_after_ms(self.stats.seconds_per_job, self.workers)

    def refuse_queued(self, error: TtsError, started_too: bool = True) -> None:
        """Answer every job still in the inbox with ``error`` (``started_too=False``: only those not begun)."""
        for job in self.inbox.drain(started_too):
            _settle(job.future, error)

    def _not_ready(self) -> TtsError:
        return refusals.not_ready(self._name, self._lifecycle.last_event, self._phases.phase)

    async def serve(self) -> None:
        """Take segments from the inbox for as long as the actor runs; a job that may not go on is answered."""
        while True:
            job, place = await self.inbox.get()
            if not self._may_run(job):
                self.after_job()
                continue
            self._phases.running += 1
            more = False
            try:
                more = await self._serve_segment(job)
            except Exception as exc:  # a bug here must not stop the inbox: answer, log, go on
                self._log.exception("synthesis_job_crashed")
                _settle(job.future, refusals.job_crashed(self._name, exc))
            finally:
                self._phases.running -= 1
                self._touch()
                self.inbox.served(job.priority)
            if more:  # back in its place: waiting work of a higher class goes first
                self.inbox.requeue(job, place)
            else:
                self.after_job()

    def _may_run(self, job: SynthesisJob) -> bool:
        """Whether ``job``'s next segment may start; if not, the job is answered (unless it was already)."""
        if job.future.done():  # cancelled while queued, or its caller's handler gave up
            return False
        if (stop := job.control.stop_error(self._name)) is not None:  # cancelled, or its deadline passed
            if not job.control.cancelled and not job.started:
                self._dropped_late(job)
            _settle(job.future, stop)
            return False
        if self._phases.stopping and not job.started:  # shutdown began after it was queued: it does not start
            _settle(job.future, refusals.shutting_down(self._name, self._lifecycle.current))
            return False
        if not is_ready(self._lifecycle.current, self._phases.phase):  # unloaded or failed since it was queued
            _settle(job.future, self._not_ready())
            return False
        return True

    def _dropped_late(self, job: SynthesisJob) -> None:
        deadline = job.control.deadline or time.monotonic()
        late_ms = round((time.monotonic() - deadline) * 1000, 1)
        self._log.info("synthesis_dropped_late", request_id=job.control.request_id, late_ms=late_ms)
        metrics.DROPPED_LATE.labels(self._name).inc()
        self.stats.dropped_late += 1

    async def _serve_segment(self, job: SynthesisJob) -> bool:
        """The job's next engine call and its hand-over to the sink; True when segments remain.

        One TTS_SYNTHESIS_TIMEOUT_S covers the whole job, counted from its first segment.
        """
        loop = asyncio.get_running_loop()
        if not job.started:
            tracer().start_span("tts.queue_wait", context=job.trace_context, start_time=job.queued_ns).end()
            job.timeout_at = loop.time() + self._settings.synthesis_timeout_s
        assert job.timeout_at is not None
        held_from = time.perf_counter()
        segment = job.segments[job.next_segment]
        attributes = {"tts.segment": segment.index, "tts.text_chars": len(segment.text)}
        with tracer().start_as_current_span("tts.segment", context=job.trace_context, attributes=attributes) as span:
            request = dataclasses.replace(job.request, text=segment.text)
            self.stats.engine_calls += 1
            started = time.perf_counter()
            self.in_engine[id(job)] = (job, started)
            try:
                engine = asyncio.ensure_future(self._engine.run(self._engine.adapter.synthesize, request, job.voice))
                done, _ = await asyncio.wait({engine}, timeout=max(0.0, job.timeout_at - loop.time()))
            finally:
                self.in_engine.pop(id(job), None)
            if not done:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                await self._abandon(job, engine)
                return False
            try:
                audio = engine.result()
                if not isinstance(audio, Audio):
                    raise TypeError(f"{self._name} returned {type(audio).__name__}, not Audio")
            except Exception as exc:  # the reply names it; the actor goes on serving
                error = self._synthesis_error(exc)
                span.set_status(Status(StatusCode.ERROR, error.message))
                _settle(job.future, error)
                return False
            self.stats.record(time.perf_counter() - started, audio.duration_s)
            span.set_attribute("tts.audio_seconds", audio.duration_s)
        job.next_segment += 1
        if not job.future.done():
            await _first_of(job.sink.accept(segment, audio), job.future, bound_s=SINK_BOUND_S)
        job.held_s += time.perf_counter() - held_from
        if job.next_segment < len(job.segments):
            return not job.future.done()
        if not job.future.done():
            self.stats.syntheses += 1
            self.stats.job_s += job.held_s
            job.future.set_result(None)
        return False

    async def _abandon(self, job: SynthesisJob, engine: asyncio.Future[Any]) -> None:
        """Past TTS_SYNTHESIS_TIMEOUT_S: answer now, and keep the backend closed until the engine returns."""
        _settle(job.future, refusals.synthesis_timeout(self._name, self._settings.synthesis_timeout_s))
        # the engine call cannot be interrupted and the worker is serial: until it returns this
        # backend takes nothing new (callers get `busy` at once, routing falls back) and what is
        # queued is answered now rather than left waiting behind it (an unload under way stays UNLOADING)
        self._abandoned += 1
        self._phases.enter(Phase.STUCK)
        self.refuse_queued(self._not_ready())
        try:
            await asyncio.wait({engine})
        finally:
            self._abandoned -= 1
            if not self._abandoned:
                self._phases.leave(Phase.STUCK)
        if not engine.cancelled():
            engine.exception()  # seen: an abandoned call's outcome is of no use to anyone
        self._log.info("abandoned_synthesis_returned")

    def _synthesis_error(self, exc: Exception) -> TtsError:
        if isinstance(exc, TtsError):
            return exc
        failure = classify_load_error(exc, self._engine.adapter.spec, "synthesizing")
        if failure.reason is Reason.OUT_OF_MEMORY:
            self._supervisor.fail(failure)  # routing falls back to the next backend from now on
            # free what the engine holds; the worker runs this before any retry's load
            self._engine.release_later("out of memory")
            return refusals.out_of_memory(self._name, failure, self._lifecycle.current)
        self._log.warning("synthesis_failed", error=repr(exc))
        return refusals.synthesis_failed(self._name, exc, self._lifecycle.current)


async def _first_of(waiting: Any, future: asyncio.Future[Any], bound_s: float) -> None:
    """Wait for ``waiting``, or until ``future`` settles, or ``bound_s``, whichever comes first."""
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({task, future}, timeout=bound_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()


def _settle(future: asyncio.Future[Any], error: TtsError) -> None:
    """Fail ``future`` unless it is settled already (a caller that gave up, a shutdown)."""
    if not future.done():
        future.set_exception(error)
