"""Following the fleet's backend states: what ``tts-actor watch`` shows.

The KV bucket (:mod:`tts_actor.fleet.state_kv`) holds each instance's current state, the ``state.>`` subjects
carry every change live; a watcher needs both, stitched without gaps or repeats, which is this module's concern.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from nats.aio.client import Client

from statemachine import StateEvent
from tts_actor.fleet.state_kv import decode_event, parse_key
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)


async def watch_states(nc: Client, live_subject: str, bucket: str) -> AsyncIterator[StateEvent]:
    """Current states from the KV first, then every live event, in order, no duplicates."""
    sub = await nc.subscribe(live_subject)
    last: dict[tuple[str, str], int] = {}
    try:
        try:
            kv = await nc.jetstream(timeout=2.0).key_value(bucket)
            watcher = await kv.watchall()
            async for entry in watcher:
                if entry is None:
                    break
                # the same event sits under <backend> and <backend>.<instance>: the seq check drops the copy
                event = decode_event(entry.value) if parse_key(entry.key) is not None else None
                if event is not None:
                    if last.get((event.backend, event.instance), -1) >= event.seq:
                        continue
                    last[(event.backend, event.instance)] = event.seq
                    yield event
            await watcher.stop()
        except Exception as exc:  # no JetStream, or no such bucket: live events only
            log.warning("kv_unavailable", bucket=bucket, error=repr(exc), note="showing live events only")
        while True:
            msg = await sub.next_msg(timeout=None)
            event = StateEvent.from_dict(json.loads(msg.data))
            key = (event.backend, event.instance)
            restarted = event.seq == 0 and last.get(key, -1) > 0  # same instance id, new process
            if last.get(key, -1) >= event.seq and not restarted:
                continue
            last[key] = event.seq
            yield event
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
