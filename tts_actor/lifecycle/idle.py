"""Unloading: on request, or after TTS_IDLE_UNLOAD_S without a request (one timer, armed on entering ``loaded``).

From the moment an unload is accepted the phase is UNLOADING, so routing stops sending
requests here at once, even while a synthesis runs that the engine's unload must wait for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from statemachine import BackendLifecycle, Reason, State, Trigger
from tts_actor.config import Settings
from tts_actor.lifecycle.engine import Engine
from tts_actor.lifecycle.phase import Phase, PhaseState


class Unloader:
    """Frees the model of one backend; owns the idle timer and the time of last use."""

    def __init__(
        self,
        lifecycle: BackendLifecycle,
        phases: PhaseState,
        engine: Engine,
        settings: Settings,
        queue_empty: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, bool]], asyncio.Task[bool]],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._lifecycle = lifecycle
        self._phases = phases
        self._engine = engine
        self._settings = settings
        self._queue_empty = queue_empty
        self._spawn = spawn
        self._log = log
        self.last_used = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set on start; no timer before

    def touch(self) -> None:
        """A request came or a job ended: the idle time counts from now."""
        self.last_used = time.monotonic()

    def accept(self, reason: Reason) -> bool:
        """Enter UNLOADING if an unload may start now (loaded or failed, nothing else under way, not stuck)."""
        if not self._lifecycle.allowed(Trigger.UNLOAD):
            return False
        if self._phases.phase is Phase.STUCK:  # inside an engine call that cannot be interrupted: it would queue
            self._log.warning("unload_refused_while_stuck", reason=reason.value)
            return False
        return self._phases.enter(Phase.UNLOADING)

    def request(self, reason: Reason) -> asyncio.Task[bool] | None:
        """Start an unload in the background; None when it is refused now."""
        return self._spawn(self.run(reason)) if self.accept(reason) else None

    async def run(self, reason: Reason) -> bool:
        """The accepted unload: the engine lets go (after a running synthesis), then the FSM goes ``missing``."""
        try:
            await self._engine.run(self._engine.adapter.unload)
        except Exception as exc:  # the engine would not let go: stay as we are, say so, try again later
            self._log.warning("unload_failed", reason=reason.value, error=repr(exc))
            if self._lifecycle.current is State.LOADED:
                self.arm()
            return False
        finally:
            self._phases.leave(Phase.UNLOADING)
        if not self._lifecycle.allowed(Trigger.UNLOAD):  # the state moved while the engine let go
            return False
        self._lifecycle.unload(reason)
        return True

    # --- the idle timer ----------------------------------------------------
    def arm(self) -> None:
        """Unload after TTS_IDLE_UNLOAD_S without requests: armed on entering ``loaded``."""
        if self.loop is None or self._settings.idle_unload_s <= 0 or self._phases.stopping:
            return
        self.disarm()
        delay = max(self.last_used + self._settings.idle_unload_s - time.monotonic(), 0.0)
        self._timer = self.loop.call_later(delay or self._settings.idle_unload_s, self._on_timer)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._lifecycle.current is not State.LOADED:
            return  # re-armed when it is loaded again
        idle_for = time.monotonic() - self.last_used
        if idle_for < self._settings.idle_unload_s or self._phases.running or not self._queue_empty():
            self.arm()  # used since: wait out the rest (a finished job refreshes last use)
            return
        self.request(Reason.IDLE_TIMEOUT)
