"""What an actor answers when it cannot do what was asked: pure factories, no event loop, no actor.

Each takes what the answer depends on (the backend's name, its lifecycle snapshot, the
phase, a setting) and returns the :class:`TtsError` a caller gets, or the
:class:`BackendFailure` the FSM records, with a code, a message and a fix. Kept apart so
the wording can be read and tested in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

from statemachine import Reason, State, StateEvent
from tts_actor.backends.base import BackendFailure, ModelRef
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.phase import Phase, is_pending
from tts_actor.lifecycle.wait_estimate import WaitEstimate

RETRY_AFTER_MS = 1000


def not_ready(name: str, snapshot: StateEvent, phase: Phase) -> TtsError:
    """The reply for a request this backend cannot serve now; ``snapshot`` is the lifecycle's last event."""
    state = snapshot.to_state
    if state is State.FAILED:
        return TtsError(
            ErrorCode.BACKEND_FAILED,
            f"backend {name} is failed ({snapshot.reason.value}): {snapshot.message}",
            snapshot.fix or f"tts-actor retry {name}",
            backend=name,
            state=state.value,
            reason=snapshot.reason.value,
        )
    if phase is Phase.STUCK and state is State.LOADED:
        return TtsError(
            ErrorCode.BUSY,
            f"backend {name} is still finishing a synthesis that went over TTS_SYNTHESIS_TIMEOUT_S",
            "Retry after retry_after_ms or pick another backend; an engine call that never returns "
            "needs this instance restarted.",
            backend=name,
            state=state.value,
            retry_after_ms=RETRY_AFTER_MS,
        )
    pending = is_pending(state, phase)
    if phase is Phase.UNLOADING:
        verb = "unloading; it loads again on demand"
    elif state is State.DOWNLOADING:
        verb = "downloading"
    else:
        verb = "loading" if pending else "not loaded"
    return TtsError(
        ErrorCode.BACKEND_NOT_READY,
        f"backend {name} is {state.value} ({verb})",
        "Retry after retry_after_ms, send wait_ms to wait for it, or pick another backend"
        if pending
        else f"Load it with `tts-actor retry {name}`.",
        backend=name,
        state=state.value,
        reason=snapshot.reason.value,
        retry_after_ms=RETRY_AFTER_MS,
    )


def shutting_down(name: str, state: State) -> TtsError:
    return TtsError(
        ErrorCode.BACKEND_NOT_READY,
        f"{name} is shutting down",
        "Retry on another instance.",
        backend=name,
        state=state.value,
        retry_after_ms=RETRY_AFTER_MS,
    )


BUSY_FIX = "Retry after retry_after_ms, or add instances (they share the queue group)."


def queue_full(name: str, queued: int, state: State, retry_after_ms: int = 500) -> TtsError:
    """``retry_after_ms``: this caller's slot on the backend's comeback schedule (``lifecycle/comeback.py``)."""
    return TtsError(
        ErrorCode.BUSY,
        f"backend {name} has {queued} requests queued (TTS_BACKEND_QUEUE_DEPTH)",
        BUSY_FIX,
        backend=name,
        state=state.value,
        retry_after_ms=retry_after_ms,
    )


def inflight_full(inflight: int, cap: int, retry_after_ms: int) -> TtsError:
    """The instance's own cap (TTS_MAX_INFLIGHT), before any backend is asked."""
    return TtsError(
        ErrorCode.BUSY,
        f"{inflight} requests in flight (TTS_MAX_INFLIGHT={cap})",
        BUSY_FIX,
        retry_after_ms=retry_after_ms,
    )


def deadline_unreachable(
    name: str, state: State, estimate: WaitEstimate, budget_s: float, retry_after_ms: int
) -> TtsError:
    """A job whose first audio the measured pace puts after its deadline: refused before it is queued."""
    return TtsError(
        ErrorCode.DEADLINE_UNREACHABLE,
        f"backend {name} would start speaking in about {estimate.first_audio_s * 1000:.0f} ms "
        f"(work queued ahead of it), after the request's deadline ({max(0.0, budget_s) * 1000:.0f} ms left)",
        "Send it to another instance (a retry goes to any of them), with a larger deadline_ms, or a higher priority; "
        "retry_after_ms says when this instance could meet the same deadline.",
        backend=name,
        state=state.value,
        retry_after_ms=retry_after_ms,
        detail={**estimate.to_detail(), "deadline_ms": max(0, round(budget_s * 1000))},
    )


def memory_guard(name: str, rss_bytes: int, limit_bytes: int, state: State, retry_after_ms: int) -> TtsError:
    """The memory guard tripped: the backend finishes its queue, then is unloaded and loaded again."""
    return TtsError(
        ErrorCode.BUSY,
        f"this instance uses {rss_bytes} bytes of memory, over TTS_MAX_RSS_BYTES={limit_bytes}: backend {name} "
        "takes no new work until it has finished what it has and been reloaded",
        BUSY_FIX,
        backend=name,
        state=state.value,
        reason="memory_guard",
        retry_after_ms=retry_after_ms,
        detail={"rss_bytes": rss_bytes, "limit_bytes": limit_bytes},
    )


def synthesis_timeout(name: str, timeout_s: float) -> TtsError:
    return TtsError(
        ErrorCode.SYNTHESIS_TIMEOUT,
        f"{name} took over {timeout_s} s",
        "Send shorter text, or raise TTS_SYNTHESIS_TIMEOUT_S.",
        backend=name,
    )


def synthesis_failed(name: str, exc: BaseException, state: State) -> TtsError:
    return TtsError(
        ErrorCode.SYNTHESIS_FAILED,
        f"{name}: {type(exc).__name__}: {str(exc)[:300]}",
        "Check the text and options; if it persists, see the service log for this backend.",
        backend=name,
        state=state.value,
    )


def out_of_memory(name: str, failure: BackendFailure, state: State) -> TtsError:
    return TtsError(
        ErrorCode.OUT_OF_MEMORY,
        failure.message,
        failure.fix,
        backend=name,
        state=state.value,
        detail=dict(failure.detail),
    )


def job_crashed(name: str, exc: BaseException) -> TtsError:
    return TtsError(ErrorCode.INTERNAL, f"{name}: {type(exc).__name__}", "Report this with the service log.")


# --- failures the FSM records during bring-up ------------------------------
def packages_missing(name: str, missing: Sequence[str], install_fix: str) -> BackendFailure:
    return BackendFailure(
        Reason.PACKAGE_MISSING,
        f"{name}: Python package(s) {', '.join(missing)} not installed",
        install_fix,
        {"missing": list(missing)},
    )


def offline(name: str, refs: Sequence[ModelRef]) -> BackendFailure:
    return BackendFailure(
        Reason.OFFLINE,
        f"{name}: model {', '.join(r.repo_id for r in refs)} is not cached and downloads are off "
        "(HF_HUB_OFFLINE=1 or TTS_ALLOW_DOWNLOAD=0)",
        f"Run `tts-actor fetch {name}` on a host with network access (same TTS_CACHE_DIR), "
        "or unset HF_HUB_OFFLINE / set TTS_ALLOW_DOWNLOAD=1.",
    )


def no_model_store(name: str) -> BackendFailure:
    return BackendFailure(Reason.DOWNLOAD_FAILED, f"{name}: no model store configured", "internal")


def load_timeout(name: str, timeout_s: float) -> BackendFailure:
    return BackendFailure(
        Reason.LOAD_ERROR,
        f"{name}: load did not finish within TTS_STARTUP_TIMEOUT_S={timeout_s}",
        "Raise TTS_STARTUP_TIMEOUT_S on slow hosts, or check `tts-actor doctor`.",
    )
