"""Retry supervision: record a failure in the FSM and, when time can heal it, arm one backoff timer.

The policy (which reasons, how long) is :class:`RetryPolicy`; this part holds the attempt
count and the one ``loop.call_later`` timer, and calls ``bring_up`` when it fires. A
successful load starts the count over (:meth:`Supervisor.loaded`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from statemachine import BackendLifecycle, State, Trigger
from tts_actor.backends.base import BackendFailure
from tts_actor.lifecycle.phase import Phase, PhaseState
from tts_actor.lifecycle.retry import RetryPolicy


class Supervisor:
    """Failures of one backend, and its automatic retries with backoff."""

    def __init__(
        self,
        lifecycle: BackendLifecycle,
        phases: PhaseState,
        policy: RetryPolicy,
        bring_up: Callable[[], None],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._lifecycle = lifecycle
        self._phases = phases
        self._policy = policy
        self._bring_up = bring_up
        self._log = log
        self.attempt = 0  # automatic attempts since the last load (or manual retry)
        self._timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set on start; no timer before

    @property
    def armed(self) -> bool:
        """An automatic retry is scheduled."""
        return self._timer is not None

    def fail(self, failure: BackendFailure) -> None:
        """Record ``failure`` (the first, named cause wins) and schedule a retry if its reason heals with time."""
        if not self._lifecycle.allowed(Trigger.FAIL):
            self._log.warning("failure_while_failed", reason=failure.reason.value, message=failure.message)
            return
        detail = dict(failure.detail)
        delay = self._next_delay(failure)
        if delay is not None:
            detail.update(retry_in_s=delay, retry_attempt=self.attempt)
        self._log.warning(
            "backend_failed", reason=failure.reason.value, message=failure.message, fix=failure.fix, retry_in_s=delay
        )
        self._lifecycle.fail(failure.reason, failure.fix, failure.message, detail=detail)
        if delay is not None and self.loop is not None:
            self.cancel()
            self._timer = self.loop.call_later(delay, self._on_timer)

    def loaded(self) -> None:
        """Loaded: the backoff starts over next time."""
        self.attempt = 0

    def restart(self) -> None:
        """A manual retry: no timer, a fresh count."""
        self.cancel()
        self.attempt = 0

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next_delay(self, failure: BackendFailure) -> float | None:
        """Backoff before the next automatic attempt, counting it; None when this failure is not retried."""
        if self._phases.stopping or not self._policy.retries(failure.reason):
            return None
        delay = self._policy.delay(self.attempt + 1)
        if delay is None:
            if self.attempt:
                self._log.warning(
                    "retries_exhausted", attempts=self.attempt, fix=f"tts-actor retry {self._lifecycle.backend}"
                )
            return None
        self.attempt += 1
        return delay

    def _on_timer(self) -> None:
        self._timer = None
        if self._lifecycle.current is State.FAILED and self._phases.phase is Phase.IDLE:
            self._log.info("retrying", attempt=self.attempt)
            self._bring_up()
