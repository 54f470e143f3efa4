"""What an actor is doing besides its FSM state: one named phase, kept in one place.

The FSM (``statemachine``) says what the backend *is* (missing, downloading, loaded,
failed); the phase says what the actor is *doing* to it (bringing it up, unloading it,
waiting out an engine call that went over its timeout, shutting down). One value
instead of five flags, so that combinations that cannot happen cannot be written either:
an actor does not bring a backend up while it unloads it, nor unload it while an engine
call it gave up on still holds the worker. ``ready`` and ``pending`` derive from the FSM
state and the phase alone.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from statemachine import State


class Phase(enum.StrEnum):
    IDLE = "idle"  # nothing under way besides serving jobs (when loaded)
    BRINGING_UP = "bringing_up"  # probe, fetch, load running in the background
    UNLOADING = "unloading"  # the engine is letting go of its model; no new job is taken
    STUCK = "stuck"  # an engine call went over TTS_SYNTHESIS_TIMEOUT_S and still holds the worker
    STOPPING = "stopping"  # shutdown began: nothing new starts, ever again


# the phases each phase may move to; STOPPING is the end
MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.BRINGING_UP, Phase.UNLOADING, Phase.STUCK, Phase.STOPPING}),
    Phase.BRINGING_UP: frozenset({Phase.IDLE, Phase.STOPPING}),
    Phase.UNLOADING: frozenset({Phase.IDLE, Phase.STOPPING}),
    Phase.STUCK: frozenset({Phase.IDLE, Phase.STOPPING}),
    Phase.STOPPING: frozenset(),
}


def is_ready(state: State, phase: Phase) -> bool:
    """Loaded, not being unloaded, not stuck: a request handed over now will be served.

    ``STOPPING`` does not change it: the front refuses new work with its own ``shutting down`` answer.
    """
    return state is State.LOADED and phase not in (Phase.UNLOADING, Phase.STUCK)


def is_pending(state: State, phase: Phase) -> bool:
    """The state may still change on its own (a load, a download, an unload under way)."""
    return phase in (Phase.BRINGING_UP, Phase.UNLOADING) or state is State.DOWNLOADING


class Changes:
    """Who is told of a change that may alter ``ready``: listeners (sync) and waiters (futures)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    def wake(self) -> None:
        for listener in self._listeners:
            listener()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_while(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Wait, woken by each change, while ``condition()`` holds, at most ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return


class PhaseState:
    """The actor's phase and its running-jobs count, shared by the parts; each change wakes ``changes``."""

    def __init__(self, changes: Changes | None = None) -> None:
        self._phase = Phase.IDLE
        self.running = 0  # jobs on the workers now: a count, not a phase (an unload may wait behind them)
        self.changes = changes or Changes()

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def stopping(self) -> bool:
        return self._phase is Phase.STOPPING

    def enter(self, phase: Phase) -> bool:
        """Move to ``phase`` if that is a legal move from the current one; whether it moved."""
        if phase not in MOVES[self._phase]:
            return False
        self._phase = phase
        self.changes.wake()
        return True

    def leave(self, phase: Phase) -> None:
        """Back to IDLE, if still in ``phase`` (a shutdown that began meanwhile stays)."""
        if not (self._phase is phase and self.enter(Phase.IDLE)):
            self.changes.wake()  # what ran in ``phase`` may have changed the FSM state: tell the waiters anyway
