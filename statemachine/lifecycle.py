"""The lifecycle of one TTS backend, as an explicit finite-state machine.

Pure: no NATS, no I/O, no clock other than the one passed in. Every transition
yields an immutable :class:`StateEvent` that the edges publish; the machine itself
only decides which moves are legal, so a bad move is an exception, never a hang.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from transitions import Machine, MachineError


class State(enum.StrEnum):
    """Where a backend stands. Declared as data; the machine is built from it."""

    MISSING = "missing"
    DOWNLOADING = "downloading"
    LOADED = "loaded"
    FAILED = "failed"


class Reason(enum.StrEnum):
    """Why a transition happened. Failure reasons come with a fix; the rest explain."""

    # failures
    PACKAGE_MISSING = "package_missing"
    DOWNLOAD_FAILED = "download_failed"
    HUB_UNREACHABLE = "hub_unreachable"
    OFFLINE = "offline"
    DISK_FULL = "disk_full"
    DOWNLOAD_STALLED = "download_stalled"
    CORRUPT_MODEL = "corrupt_model"
    MODEL_UNAVAILABLE = "model_unavailable"
    LOAD_ERROR = "load_error"
    OUT_OF_MEMORY = "out_of_memory"
    LICENSE_NOT_ACCEPTED = "license_not_accepted"
    # ordinary moves
    STARTUP = "startup"
    DOWNLOAD_STARTED = "download_started"
    DOWNLOAD_PROGRESS = "download_progress"
    DOWNLOAD_COMPLETE = "download_complete"
    LOADED_FROM_CACHE = "loaded_from_cache"
    LOADED_AFTER_DOWNLOAD = "loaded_after_download"
    RETRY = "retry"
    UNLOAD_REQUESTED = "unload_requested"
    IDLE_TIMEOUT = "idle_timeout"

    @property
    def is_failure(self) -> bool:
        return self in FAILURE_REASONS


FAILURE_REASONS = frozenset(
    {
        Reason.PACKAGE_MISSING,
        Reason.DOWNLOAD_FAILED,
        Reason.HUB_UNREACHABLE,
        Reason.OFFLINE,
        Reason.DISK_FULL,
        Reason.DOWNLOAD_STALLED,
        Reason.CORRUPT_MODEL,
        Reason.MODEL_UNAVAILABLE,
        Reason.LOAD_ERROR,
        Reason.OUT_OF_MEMORY,
        Reason.LICENSE_NOT_ACCEPTED,
    }
)


class Trigger(enum.StrEnum):
    """The moves a caller may ask for."""

    START_DOWNLOAD = "start_download"
    REPORT_PROGRESS = "report_progress"
    FINISH_DOWNLOAD = "finish_download"
    FINISH_LOADING = "finish_loading"
    FAIL = "fail"
    RETRY = "retry"
    RESET = "reset"
    UNLOAD = "unload"


# The whole lifecycle as data, in the shape `transitions` takes. ``dest: None`` is an
# internal transition (progress): no exit/enter, but it still yields an event.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": Trigger.START_DOWNLOAD.value, "source": State.MISSING.value, "dest": State.DOWNLOADING.value},
    {"trigger": Trigger.REPORT_PROGRESS.value, "source": State.DOWNLOADING.value, "dest": None},
    {"trigger": Trigger.FINISH_DOWNLOAD.value, "source": State.DOWNLOADING.value, "dest": None},
    {
        "trigger": Trigger.FINISH_LOADING.value,
        "source": [State.MISSING.value, State.DOWNLOADING.value],
        "dest": State.LOADED.value,
    },
    {
        "trigger": Trigger.FAIL.value,
        "source": [State.MISSING.value, State.DOWNLOADING.value, State.LOADED.value],
        "dest": State.FAILED.value,
    },
    {"trigger": Trigger.RETRY.value, "source": State.FAILED.value, "dest": State.DOWNLOADING.value},
    # a retry with nothing to download (a local model, or a package check to redo) starts over
    {"trigger": Trigger.RESET.value, "source": State.FAILED.value, "dest": State.MISSING.value},
    {"trigger": Trigger.UNLOAD.value, "source": [State.LOADED.value, State.FAILED.value], "dest": State.MISSING.value},
]


class IllegalTransition(Exception):
    """A trigger that the current state does not allow."""

    def __init__(self, backend: str, trigger: Trigger, state: State) -> None:
        super().__init__(f"{backend}: cannot {trigger.value} while {state.value}")
        self.backend = backend
        self.trigger = trigger
        self.state = state


@dataclass(frozen=True)
class Progress:
    """Bytes done out of total (total may be unknown while a size is being read)."""

    done: int
    total: int | None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


@dataclass(frozen=True)
class StateEvent:
    """One transition, as published on ``tts.state.<backend>`` and kept in the KV."""

    backend: str
    instance: str
    from_state: State | None
    to_state: State
    reason: Reason
    fix: str | None
    progress: Progress | None
    seq: int
    at: str
    message: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``from``/``to`` are the wire names."""
        return {
            "backend": self.backend,
            "instance": self.instance,
            "from": self.from_state.value if self.from_state else None,
            "to": self.to_state.value,
            "reason": self.reason.value,
            "fix": self.fix,
            "message": self.message,
            "progress": asdict(self.progress) if self.progress else None,
            "seq": self.seq,
            "at": self.at,
            "detail": dict(self.detail),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateEvent:
        progress = data.get("progress")
        return cls(
            backend=data["backend"],
            instance=data["instance"],
            from_state=State(data["from"]) if data.get("from") else None,
            to_state=State(data["to"]),
            reason=Reason(data["reason"]),
            fix=data.get("fix"),
            progress=Progress(progress["done"], progress.get("total")) if progress else None,
            seq=int(data["seq"]),
            at=data["at"],
            message=data.get("message"),
            detail=dict(data.get("detail") or {}),
        )


def rfc3339_now() -> str:
    """UTC now as RFC 3339 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _MachineModel:
    """What ``transitions`` drives: holds ``state`` and gets the trigger methods bound."""

    state: str
    trigger: Callable[..., bool]


class BackendLifecycle:
    """The state machine of one backend instance.

    Each trigger method returns the :class:`StateEvent` it produced, or raises
    :class:`IllegalTransition`. Listeners get every event in order; they must not
    trigger the machine again from inside the callback.
    """

    def __init__(
        self,
        backend: str,
        instance: str,
        clock: Callable[[], str] = rfc3339_now,
    ) -> None:
        self.backend = backend
        self.instance = instance
        self._clock = clock
        self._seq = 0
        self._listeners: list[Callable[[StateEvent], None]] = []
        self.reason: Reason = Reason.STARTUP
        self.fix: str | None = None
        self.message: str | None = None
        self.progress: Progress | None = None
        self.since: str = clock()
        self._model = _MachineModel()
        self._machine = Machine(
            model=self._model,
            states=[s.value for s in State],
            transitions=TRANSITIONS,
            initial=State.MISSING.value,
            auto_transitions=False,
            send_event=True,
            model_attribute="state",
        )
        self.last_event = self._emit(None, State.MISSING, Reason.STARTUP, None, None, None, {})

    # --- reading -----------------------------------------------------------
    @property
    def current(self) -> State:
        return State(self._model.state)

    def allowed(self, trigger: Trigger) -> bool:
        """Whether ``trigger`` is legal from the current state."""
        return trigger.value in self._machine.get_triggers(self._model.state)

    def subscribe(self, listener: Callable[[StateEvent], None]) -> None:
        self._listeners.append(listener)

    # --- moving ------------------------------------------------------------
    def start_download(self, total: int | None = None, message: str | None = None) -> StateEvent:
        return self._move(Trigger.START_DOWNLOAD, Reason.DOWNLOAD_STARTED, progress=Progress(0, total), message=message)

    def report_progress(self, done: int, total: int | None) -> StateEvent:
        return self._move(Trigger.REPORT_PROGRESS, Reason.DOWNLOAD_PROGRESS, progress=Progress(done, total))

    def finish_download(self, total: int) -> StateEvent:
        return self._move(Trigger.FINISH_DOWNLOAD, Reason.DOWNLOAD_COMPLETE, progress=Progress(total, total))

    def finish_loading(self, message: str | None = None, detail: dict[str, Any] | None = None) -> StateEvent:
        reason = Reason.LOADED_AFTER_DOWNLOAD if self.current is State.DOWNLOADING else Reason.LOADED_FROM_CACHE
        return self._move(Trigger.FINISH_LOADING, reason, message=message, detail=detail)

    def fail(self, reason: Reason, fix: str, message: str, detail: dict[str, Any] | None = None) -> StateEvent:
        if not reason.is_failure:
            raise ValueError(f"{reason.value} is not a failure reason")
        if not fix:
            raise ValueError("a failure needs an actionable fix")
        return self._move(Trigger.FAIL, reason, fix=fix, message=message, detail=detail)

    def retry(self, message: str | None = None) -> StateEvent:
        return self._move(Trigger.RETRY, Reason.RETRY, progress=Progress(0, None), message=message)

    def reset(self, message: str | None = None) -> StateEvent:
        """Back to ``missing`` from ``failed``, for a retry that has nothing to download."""
        return self._move(Trigger.RESET, Reason.RETRY, message=message)

    def unload(self, reason: Reason = Reason.UNLOAD_REQUESTED) -> StateEvent:
        if reason not in (Reason.UNLOAD_REQUESTED, Reason.IDLE_TIMEOUT):
            raise ValueError(f"{reason.value} is not an unload reason")
        return self._move(Trigger.UNLOAD, reason)

    def _move(
        self,
        trigger: Trigger,
        reason: Reason,
        *,
        fix: str | None = None,
        progress: Progress | None = None,
        message: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> StateEvent:
        before = self.current
        try:
            self._model.trigger(trigger.value)
        except MachineError as exc:
            raise IllegalTransition(self.backend, trigger, before) from exc
        after = self.current
        if after is not before:
            self.since = self._clock()
        self.reason, self.fix, self.message = reason, fix, message
        if progress is not None or after is not State.DOWNLOADING:
            self.progress = progress
        self.last_event = self._emit(before, after, reason, fix, self.progress, message, detail or {})
        return self.last_event

    def _emit(
        self,
        before: State | None,
        after: State,
        reason: Reason,
        fix: str | None,
        progress: Progress | None,
        message: str | None,
        detail: dict[str, Any],
    ) -> StateEvent:
        event = StateEvent(
            backend=self.backend,
            instance=self.instance,
            from_state=before,
            to_state=after,
            reason=reason,
            fix=fix,
            progress=progress,
            seq=self._seq,
            at=self._clock(),
            message=message,
            detail=detail,
        )
        self._seq += 1
        for listener in list(self._listeners):
            listener(event)
        return event
