"""The memory guard (TTS_MAX_RSS_BYTES): a process whose memory creeps reloads its heaviest backend.

Checked when a job ends (that is when an engine's memory grows), from ``/proc/self/statm``. Above
the limit, the heaviest backend that is loaded (its declared ``approx_memory_mb``) is *guarded*: it
takes no new work (callers get ``busy`` with reason ``memory_guard`` and a ``retry_after_ms``),
finishes what it has queued, is unloaded and loaded again; each step is a structured
``memory_guard`` log event and a count in ``tts_memory_guard_actions_total``. If the reload does
not bring the process under the limit (memory held elsewhere), the guard says so once
(``ineffective``) and stays disarmed until the process is measured under the limit again, rather
than reloading in a loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from statemachine import State
from tts_actor.backends.base import BackendAdapter
from tts_actor.errors import TtsError
from tts_actor.lifecycle import refusals
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger


class BackendActor(Protocol):
    """What the guard needs of an actor (:class:`tts_actor.lifecycle.actor.BackendActor`, which holds the guard)."""

    adapter: BackendAdapter

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> State: ...
    @property
    def ready(self) -> bool: ...
    @property
    def busy(self) -> bool: ...
    @property
    def queued(self) -> int: ...
    def retry_after_ms(self) -> int: ...
    async def unload(self) -> bool: ...
    def bring_up(self) -> None: ...
    async def wait_settled(self, timeout_s: float) -> State: ...


log = get_logger(__name__)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RELOAD_BOUND_S = 300.0  # the reload's load, waited for on events; a load that takes longer is the FSM's to report


def read_rss_bytes(path: str = "/proc/self/statm") -> int | None:
    """This process's resident size in bytes; None where there is no /proc (the guard is then off)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class MemoryGuard:
    """Watches the resident size after each job and reloads the heaviest backend above ``limit_bytes``."""

    def __init__(
        self,
        limit_bytes: int,
        actors: Mapping[str, BackendActor],
        read_rss: Callable[[], int | None] = read_rss_bytes,
    ) -> None:
        self.limit_bytes = limit_bytes
        self._actors = actors
        self._read_rss = read_rss
        self.guarded: str | None = None  # the backend taking no new work now
        self.armed = True  # False after an ineffective reload, until the process is under the limit again
        self.rss_at_trip = 0
        self.reloads = 0
        self._task: asyncio.Task[None] | None = None
        metrics.MEMORY_GUARD_BYTES.set(limit_bytes)

    @property
    def enabled(self) -> bool:
        return self.limit_bytes > 0

    def refusal(self, actor: BackendActor) -> TtsError | None:
        """``busy`` for a job sent to the guarded backend before its reload; None otherwise."""
        if self.guarded != actor.name:
            return None
        return refusals.memory_guard(
            actor.name, self.rss_at_trip, self.limit_bytes, actor.state, actor.retry_after_ms()
        )

    def check(self) -> None:
        """A job ended: trip the guard above the limit, and start the reload once the guarded backend is idle."""
        if not self.enabled:
            return
        if self.guarded is None:
            rss = self._read_rss()
            if rss is None:
                return
            if rss <= self.limit_bytes:
                self.armed = True
                return
            if not self.armed:
                return
            heaviest = self._heaviest()
            if heaviest is None:
                return
            self.guarded, self.rss_at_trip = heaviest.name, rss
            self._event("tripped", heaviest.name, rss, queued=heaviest.queued)
        actor = self._actors[self.guarded]
        if self._task is None and not actor.queued and not actor.busy:
            self._task = asyncio.ensure_future(self._reload(actor))

    def _heaviest(self) -> BackendActor | None:
        ready = [a for a in self._actors.values() if a.ready]
        return max(ready, key=lambda a: a.adapter.spec.approx_memory_mb, default=None)

    async def _reload(self, actor: BackendActor) -> None:
        """Unload and load ``actor`` again, then measure; the guard is lifted whatever the outcome."""
        try:
            unloaded = await actor.unload()
            if unloaded:
                actor.bring_up()
                await actor.wait_settled(RELOAD_BOUND_S)
            rss = self._read_rss() or 0
            self.reloads += unloaded
            self._event("reloaded" if unloaded else "unload_refused", actor.name, rss, state=actor.state.value)
            if rss > self.limit_bytes:
                self.armed = False
                self._event("ineffective", actor.name, rss)
        except Exception as exc:  # the FSM tells the backend's own failure; the guard must not stay up
            log.exception("memory_guard_reload_failed", backend=actor.name, error=repr(exc))
        finally:
            self.guarded = None
            self._task = None

    def _event(self, action: str, backend: str, rss: int, **extra: Any) -> None:
        metrics.MEMORY_GUARD_ACTIONS.labels(backend, action).inc()
        fix = (
            "Nothing to do if it recurs rarely; if the guard is ineffective, memory is held outside the backend: "
            "restart the instance or raise TTS_MAX_RSS_BYTES."
            if action == "ineffective"
            else None
        )
        log.warning(
            "memory_guard",
            action=action,
            backend=backend,
            rss_bytes=rss,
            limit_bytes=self.limit_bytes,
            **({"fix": fix} if fix else {}),
            **extra,
        )

    def status(self) -> dict[str, object]:
        return {
            "limit_bytes": self.limit_bytes,
            "rss_bytes": self._read_rss(),
            "guarded": self.guarded,
            "armed": self.armed,
            "reloads": self.reloads,
        }
