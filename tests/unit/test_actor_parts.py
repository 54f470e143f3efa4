"""The actor's parts that need no engine: the phase rules, the refusals, the per-actor stats, a late job dropped."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
import structlog
from prometheus_client import REGISTRY

from statemachine import Reason, State, StateEvent
from tests.support.backends import isolated_settings
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.backends.base import BackendFailure, ModelRef, Voice
from tts_actor.backends.piper import PiperBackend
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle import refusals
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.job_runner import ActorStats
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.lifecycle.phase import MOVES, Changes, Phase, PhaseState, is_pending, is_ready
from tts_actor.wire.messages import SynthesisRequest

# Written out by hand (not derived from MOVES) so a change to the rules fails here.
LEGAL_MOVES = {
    (Phase.IDLE, Phase.BRINGING_UP),
    (Phase.IDLE, Phase.UNLOADING),
    (Phase.IDLE, Phase.STUCK),
    (Phase.IDLE, Phase.STOPPING),
    (Phase.BRINGING_UP, Phase.IDLE),
    (Phase.BRINGING_UP, Phase.STOPPING),
    (Phase.UNLOADING, Phase.IDLE),
    (Phase.UNLOADING, Phase.STOPPING),
    (Phase.STUCK, Phase.IDLE),
    (Phase.STUCK, Phase.STOPPING),
}


def in_phase(phase: Phase) -> PhaseState:
    phases = PhaseState()
    if phase is not Phase.IDLE:
        assert phases.enter(phase)
    assert phases.phase is phase
    return phases


@pytest.mark.parametrize(("start", "target"), list(itertools.product(Phase, Phase)))
def test_every_phase_move(start: Phase, target: Phase) -> None:
    phases = in_phase(start)
    woken: list[None] = []
    phases.changes.subscribe(lambda: woken.append(None))
    legal = (start, target) in LEGAL_MOVES
    assert (target in MOVES[start]) is legal
    assert phases.enter(target) is legal
    assert phases.phase is (target if legal else start), "an illegal move must not change the phase"
    assert len(woken) == (1 if legal else 0)


def test_nothing_else_starts_while_something_is_under_way() -> None:
    # the combinations five flags allowed and one phase cannot hold
    for busy in (Phase.BRINGING_UP, Phase.UNLOADING, Phase.STUCK):
        for other in (Phase.BRINGING_UP, Phase.UNLOADING, Phase.STUCK):
            assert not in_phase(busy).enter(other), (busy, other)
    stopping = in_phase(Phase.STOPPING)
    assert stopping.stopping
    assert not any(stopping.enter(p) for p in Phase), "STOPPING is the end"


def test_leaving_a_phase_returns_to_idle_only_from_that_phase() -> None:
    phases = in_phase(Phase.BRINGING_UP)
    phases.leave(Phase.UNLOADING)
    assert phases.phase is Phase.BRINGING_UP
    phases.leave(Phase.BRINGING_UP)
    assert phases.phase is Phase.IDLE
    stopping = in_phase(Phase.BRINGING_UP)
    stopping.enter(Phase.STOPPING)  # shutdown began while the bring-up ran: its end must not undo that
    woken: list[None] = []
    stopping.changes.subscribe(lambda: woken.append(None))
    stopping.leave(Phase.BRINGING_UP)
    assert stopping.phase is Phase.STOPPING and woken == [None]  # waiters still hear that it ended


@pytest.mark.parametrize(("state", "phase"), list(itertools.product(State, Phase)))
def test_ready_and_pending_derive_from_state_and_phase(state: State, phase: Phase) -> None:
    ready = state is State.LOADED and phase in (Phase.IDLE, Phase.BRINGING_UP, Phase.STOPPING)
    pending = state is State.DOWNLOADING or phase in (Phase.BRINGING_UP, Phase.UNLOADING)
    assert is_ready(state, phase) is ready
    assert is_pending(state, phase) is pending


async def test_waiters_wake_on_a_change_and_give_up_at_their_timeout() -> None:
    changes = Changes()
    holds = [True]
    waiting = asyncio.create_task(changes.wait_while(lambda: holds[0], 30))
    await asyncio.sleep(0)
    assert changes.waiting == 1
    holds[0] = False
    changes.wake()
    await asyncio.wait_for(waiting, 1)
    started = time.monotonic()
    await changes.wait_while(lambda: True, 0.05)
    assert 0.04 <= time.monotonic() - started < 1


# --- refusals: pure, no event loop --------------------------------------------
def snapshot(
    state: State, reason: Reason = Reason.STARTUP, fix: str | None = None, message: str | None = None
) -> StateEvent:
    """The lifecycle's last event, as the refusals read it."""
    return StateEvent("piper", "i", None, state, reason, fix, None, 0, "t", message)


def test_failed_names_its_reason_and_the_fix() -> None:
    error = refusals.not_ready(
        "piper", snapshot(State.FAILED, Reason.OFFLINE, fix="run fetch", message="not cached"), Phase.IDLE
    )
    assert (error.code, error.fix, error.reason, error.state) == (
        ErrorCode.BACKEND_FAILED,
        "run fetch",
        "offline",
        "failed",
    )
    assert error.message == "backend piper is failed (offline): not cached"
    bare = refusals.not_ready("piper", snapshot(State.FAILED, Reason.LOAD_ERROR), Phase.IDLE)
    assert bare.fix == "tts-actor retry piper"


def test_stuck_is_busy_with_a_retry_hint() -> None:
    error = refusals.not_ready("piper", snapshot(State.LOADED), Phase.STUCK)
    assert (error.code, error.retry_after_ms, error.state) == (ErrorCode.BUSY, 1000, "loaded")
    assert "TTS_SYNTHESIS_TIMEOUT_S" in error.message and "restarted" in error.fix


@pytest.mark.parametrize(
    ("state", "phase", "verb", "waitable"),
    [
        (State.LOADED, Phase.UNLOADING, "unloading; it loads again on demand", True),
        (State.DOWNLOADING, Phase.BRINGING_UP, "downloading", True),
        (State.MISSING, Phase.BRINGING_UP, "loading", True),
        (State.MISSING, Phase.IDLE, "not loaded", False),
    ],
)
def test_not_ready_says_what_is_under_way_and_whether_waiting_helps(
    state: State, phase: Phase, verb: str, waitable: bool
) -> None:
    error = refusals.not_ready("piper", snapshot(state), phase)
    assert error.code is ErrorCode.BACKEND_NOT_READY and error.retry_after_ms == 1000
    assert error.message == f"backend piper is {state.value} ({verb})"
    assert ("wait_ms" in error.fix) is waitable
    assert ("tts-actor retry piper" in error.fix) is not waitable


def test_the_other_refusals_carry_code_message_and_fix() -> None:
    cases: list[tuple[TtsError, ErrorCode, str]] = [
        (refusals.shutting_down("piper", State.LOADED), ErrorCode.BACKEND_NOT_READY, "shutting down"),
        (refusals.queue_full("piper", 8, State.LOADED), ErrorCode.BUSY, "8 requests queued"),
        (refusals.synthesis_timeout("piper", 2.5), ErrorCode.SYNTHESIS_TIMEOUT, "took over 2.5 s"),
        (refusals.synthesis_failed("piper", ValueError("x" * 400), State.LOADED), ErrorCode.SYNTHESIS_FAILED, "x"),
        (refusals.job_crashed("piper", KeyError("k")), ErrorCode.INTERNAL, "KeyError"),
    ]
    for error, code, words in cases:
        assert error.code is code and words in error.message and error.fix, error
    assert len(cases[3][0].message) < 340  # the engine's text is cut, not echoed whole
    oom = refusals.out_of_memory(
        "piper", BackendFailure(Reason.OUT_OF_MEMORY, "oom", "free memory", {"free_mb": 3}), State.FAILED
    )
    assert (oom.code, oom.fix, oom.detail, oom.state) == (
        ErrorCode.OUT_OF_MEMORY,
        "free memory",
        {"free_mb": 3},
        "failed",
    )


def test_bring_up_failures_name_the_setting_to_change() -> None:
    offline = refusals.offline("piper", [ModelRef("rhasspy/piper-voices")])
    assert offline.reason is Reason.OFFLINE and "tts-actor fetch piper" in offline.fix
    assert "rhasspy/piper-voices" in offline.message
    missing = refusals.packages_missing("xtts", ["TTS"], "pip install -e '.[xtts]'")
    assert (missing.reason, missing.detail) == (Reason.PACKAGE_MISSING, {"missing": ["TTS"]})
    timeout = refusals.load_timeout("piper", 9.0)
    assert timeout.reason is Reason.LOAD_ERROR and "TTS_STARTUP_TIMEOUT_S=9.0" in timeout.message


def test_real_time_factor_is_none_before_any_audio() -> None:
    stats = ActorStats()
    assert stats.real_time_factor is None
    stats.engine_s, stats.audio_s = 0.5, 2.0
    assert stats.real_time_factor == 0.25


# --- a job whose deadline passed in the queue ------------------------------------
class Sink:
    async def accept(self, segment: Segment, audio: Audio) -> None:
        raise AssertionError("a dropped job hands no audio down")


async def test_a_job_late_in_the_queue_is_dropped_logged_and_counted(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path)
    with structlog.testing.capture_logs() as logs:
        actor = BackendActor(PiperBackend(settings), settings, None, lambda _event: None)
        actor.lifecycle.finish_loading()  # no engine call is made for a dropped job: the model is not needed
        before = REGISTRY.get_sample_value("tts_dropped_late_total", {"backend": "piper"}) or 0.0
        control = JobControl("req-late", deadline=time.monotonic() - 0.2, deadline_ms=100)
        job = SynthesisJob(
            SynthesisRequest(text="Too late."),
            Voice("v", "en", "piper"),
            [Segment(0, "Too late.", 0, 9)],
            Sink(),
            control,
            asyncio.get_running_loop().create_future(),
        )
        actor.runner.put(job)
        runner = asyncio.create_task(actor.runner.serve())
        try:
            with pytest.raises(TtsError) as info:
                await asyncio.wait_for(job.future, 5)
        finally:
            runner.cancel()
            actor.engine.worker.shutdown(wait=True)
    assert info.value.code is ErrorCode.SYNTHESIS_TIMEOUT
    assert (actor.engine_calls, actor.stats.dropped_late) == (0, 1)
    assert REGISTRY.get_sample_value("tts_dropped_late_total", {"backend": "piper"}) == before + 1
    dropped = [e for e in logs if e["event"] == "synthesis_dropped_late"]
    assert len(dropped) == 1 and dropped[0]["request_id"] == "req-late" and dropped[0]["late_ms"] >= 200
