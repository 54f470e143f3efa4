"""The fleet's view: every instance and backend, read from the state KV's per-instance entries.

Each instance keeps ``<backend>.<instance>`` in the ``tts_state`` bucket and re-puts it
well within the bucket's TTL (:mod:`tts_actor.fleet.publisher`), so what is read here is the set
of live instances: one killed without cleanup ages out, one stopped cleanly deleted its
entries. The KV is the only source; no instance is asked anything. A running service answers
``tts.status`` from its :class:`~tts_actor.fleet.watch.FleetWatch` (a live copy); :func:`read_fleet`
is the one-off read for tools and tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from statemachine import State, StateEvent
from tts_actor.fleet.watch import FleetWatch

READ_TIMEOUT_S = 2.0


async def read_fleet(nc: Client, bucket: str, timeout_s: float = READ_TIMEOUT_S) -> dict[str, dict[str, StateEvent]]:
    """instance -> backend -> its current :class:`StateEvent`, from every live per-instance entry (read once)."""
    watch = FleetWatch(nc, bucket, inactive_s=5.0)  # a one-off read leaves no consumer behind for long
    await asyncio.wait_for(_first_sync(watch), timeout_s)
    return watch.fleet()


async def _first_sync(watch: FleetWatch) -> None:
    """Run a watch until it has read the entries present when it opened, then close it."""
    changes = watch.changes()
    try:
        while await anext(changes) is not None:  # None: every entry present at opening is read
            pass
    finally:
        await changes.aclose()


def _backend_row(event: StateEvent) -> dict[str, Any]:
    return {
        "name": event.backend,
        "state": event.to_state.value,
        "reason": event.reason.value,
        "fix": event.fix,
        "message": event.message,
        "progress": {"done": event.progress.done, "total": event.progress.total} if event.progress else None,
        "since": event.at,
        "seq": event.seq,
    }


def fleet_status(fleet: dict[str, dict[str, StateEvent]], local: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fleet as JSON: each instance's backends, and per backend who has it loaded, failed, or on the way.

    ``local`` is the answering instance's own ``Registry.status()``: fresher than its KV entries,
    and present even when the KV is not.
    """
    instances: dict[str, list[dict[str, Any]]] = {
        name: [_backend_row(e) for _, e in sorted(events.items())] for name, events in fleet.items()
    }
    if local is not None:
        keys = ("name", "state", "reason", "fix", "message", "progress", "since", "seq")
        instances[local["instance"]] = [{k: b.get(k) for k in keys} for b in local["backends"]]
    by_backend: dict[str, dict[str, Any]] = {}
    for instance, rows in sorted(instances.items()):
        for row in rows:
            summary = by_backend.setdefault(row["name"], {"loaded": [], "failed": [], "other": []})
            if row["state"] == State.LOADED.value:
                summary["loaded"].append(instance)
            elif row["state"] == State.FAILED.value:
                summary["failed"].append({"instance": instance, "reason": row["reason"], "fix": row["fix"]})
            else:
                summary["other"].append({"instance": instance, "state": row["state"], "reason": row["reason"]})
    return {
        "instances": [{"instance": name, "backends": rows} for name, rows in sorted(instances.items())],
        "backends": dict(sorted(by_backend.items())),
    }


@dataclass(frozen=True)
class Departure:
    """An instance's entry for a backend left the KV: ``stopped`` (it deleted it) or ``aged_out`` (it died)."""

    backend: str
    instance: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"departed": self.instance, "backend": self.backend, "why": self.why}


async def follow_departures(nc: Client, bucket: str) -> AsyncIterator[Departure]:
    """Live departures from the fleet (the current entries are read first, to know whose key is whose).

    A dead instance's entry ages out under the bucket's TTL; the server marks that with a
    ``MaxAge`` marker (nats-server 2.11+, buckets made with a limit marker TTL), which arrives
    here as a purge.
    """
    changes = FleetWatch(nc, bucket).changes()
    try:
        async for change in changes:
            if change is not None and change.live and change.event is None and change.key.instance is not None:
                yield Departure(change.key.backend, change.key.instance, change.why or "stopped")
    finally:
        await asyncio.shield(changes.aclose())
