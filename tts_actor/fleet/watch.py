"""A live copy of the state KV: every instance's current event per backend, as the bucket holds it.

One KV watch per process feeds routing (who else has what loaded), ``tts.status`` (the fleet, without
reading the bucket per call) and the fleet view. Entries are keyed by the codec's parsed identity
(:func:`tts_actor.fleet.state_kv.parse_key`), so an instance named ``tts:1`` or ``eu west`` recognises its
own entries. Each live instance re-puts its entries every ``fleet_ttl_s / 3``; a watch that hears nothing
for ``silence_s`` (the bucket was lost with a server's store, the consumer went away) is opened again and
its snapshot replaces the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE

from statemachine import State, StateEvent
from tts_actor.fleet.state_kv import StateKey, decode_event, parse_key
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
WATCH_RETRY_S = 2.0  # the watch reopens the KV after this long when it could not be read
OPEN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Change:
    """One per-instance entry changed: ``event`` None means it left (``why``: ``stopped`` or ``aged_out``)."""

    key: StateKey
    event: StateEvent | None
    why: str | None = None
    live: bool = True  # False while the watch reads the entries that were there when it opened


class FleetWatch:
    """The copy, and the task that keeps it; ``own`` is this process's instance name (None for a client)."""

    def __init__(
        self, nc: Client, bucket: str, own: str | None = None, silence_s: float | None = None, inactive_s: float = 300
    ) -> None:
        self.nc = nc
        self.bucket = bucket
        self.own = own
        self.silence_s = silence_s
        self.inactive_s = inactive_s
        self.entries: dict[StateKey, StateEvent] = {}
        self.synced = False  # the copy holds the bucket as it was when a watch opened, and what came since
        self.error: str | None = None  # why the watch is broken now (None while it follows the bucket)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # --- reading the copy ------------------------------------------------------
    @property
    def events(self) -> dict[tuple[str, str], StateEvent]:
        """The other instances' entries: (backend, instance) -> event (our own actors are fresher)."""
        own = self.own
        return {(k.backend, k.instance): e for k, e in self.entries.items() if k.instance not in (None, own)}

    def fleet(self) -> dict[str, dict[str, StateEvent]]:
        """instance -> backend -> its current event, for every instance (this one included)."""
        fleet: dict[str, dict[str, StateEvent]] = {}
        for key, event in self.entries.items():
            if key.instance is not None:
                fleet.setdefault(key.instance, {})[key.backend] = event
        return fleet

    def loaded_elsewhere(self) -> frozenset[str]:
        return frozenset(b for (b, _), e in self.events.items() if e.to_state is State.LOADED)

    def loaded_elsewhere_for(self, language: str) -> frozenset[str]:
        """Backends another instance has loaded and said (in the event's ``languages``) it speaks ``language``."""
        return frozenset(
            b
            for (b, _), e in self.events.items()
            if e.to_state is State.LOADED and language in (e.detail.get("languages") or ())
        )

    def view(self, backend: str) -> dict[str, Any]:
        """The other instances' states for ``backend``: loaded on whom, failed where and why, the rest."""
        view: dict[str, Any] = {"loaded": [], "failed": [], "other": []}
        for (name, instance), event in sorted(self.events.items()):
            if name != backend:
                continue
            if event.to_state is State.LOADED:
                view["loaded"].append(instance)
            elif event.to_state is State.FAILED:
                view["failed"].append({"instance": instance, "reason": event.reason.value, "fix": event.fix})
            else:
                view["other"].append({"instance": instance, "state": event.to_state.value})
        return view

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait, on changes to the copy, until ``predicate`` holds; False when ``timeout_s`` passed first."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)
        return predicate()

    # --- keeping it --------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                async for _ in self.changes():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no bucket yet, JetStream off, the connection away: try again
                await self._broken(exc)
                await asyncio.sleep(WATCH_RETRY_S)

    async def _broken(self, exc: BaseException) -> None:
        self.error = type(exc).__name__
        log.debug("fleet_watch_retry", bucket=self.bucket, error=repr(exc))
        async with self._changed:
            self._changed.notify_all()

    async def changes(self) -> AsyncIterator[Change | None]:
        """Open a watch and apply each update to the copy, yielding it; raises when the watch breaks or falls silent.

        The first changes are the entries present when it opened (``live`` False), then one None; entries
        of the copy that are not among them are dropped then.
        """
        kv = await self.nc.jetstream(timeout=OPEN_TIMEOUT_S).key_value(self.bucket)
        watcher = await kv.watchall(inactive_threshold=self.inactive_s)
        present: set[StateKey] | None = set()  # None once the entries present at opening are all read
        try:
            while True:
                entry = await watcher.updates(timeout=self.silence_s)  # type: ignore[arg-type]
                if entry is None or not hasattr(entry, "key"):  # None: the present entries are all read
                    if present is not None:
                        for gone in set(self.entries) - present:
                            del self.entries[gone]
                        present = None
                        self.synced, self.error = True, None
                        await self._notify()
                        yield None
                    continue
                change = self._apply(entry.key, entry.operation, entry.value, live=present is None)
                if change is None:
                    continue
                if present is not None:
                    present.add(change.key)
                await self._notify()
                yield change
        except nats.errors.TimeoutError:
            raise TimeoutError(f"no state KV update in {self.silence_s} s") from None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(watcher.stop())

    async def _notify(self) -> None:
        if self.own is not None:  # the service's own watch (a tool's one-off read says nothing of this process)
            metrics.FLEET_INSTANCES.set(len({k.instance for k in self.entries if k.instance is not None}))
        async with self._changed:
            self._changed.notify_all()

    def _apply(self, raw_key: str, operation: str | None, value: bytes | None, live: bool) -> Change | None:
        key = parse_key(raw_key)
        if key is None or key.shared:  # ``<backend>`` is a copy of the latest per-instance event
            return None
        if operation in (KV_DEL, KV_PURGE) or not value:
            if self.entries.pop(key, None) is None:
                return None
            return Change(key, None, "stopped" if operation == KV_DEL else "aged_out", live)
        event = decode_event(value)
        if event is None:
            log.warning("fleet_entry_unreadable", key=raw_key)
            return None
        self.entries[key] = event
        return Change(key, event, None, live)
