"""Reading the audit trail back: every kept event of the ``<PREFIX>_AUDIT`` stream, oldest first.

An ordered consumer on the stream (the rights the monitor and operator roles hold), read until it has
delivered what the stream held when the read began; nothing is acknowledged or changed.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from tts_actor.wire.subjects import Subjects

MAX_EVENTS = 100_000  # one read's bound: an audit of a busy year is read in slices with --action


async def read_audit(
    nc: Client, prefix: str = "tts", action: str = ">", limit: int = MAX_EVENTS, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
    """The kept events on ``<prefix>.audit.<action>``, oldest first, at most ``limit`` (the newest ones)."""
    subjects = Subjects(prefix=prefix)
    js = nc.jetstream(timeout=timeout_s)
    try:
        info = await js.stream_info(subjects.audit_stream, subjects_filter=None)
    except NotFoundError:
        return []  # nothing was ever recorded
    last = info.state.last_seq
    if not info.state.messages:
        return []
    sub = await js.subscribe(
        subjects.audit(action),
        stream=subjects.audit_stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    events: list[dict[str, Any]] = []
    try:
        if (await sub.consumer_info()).num_pending == 0 and sub.pending_msgs == 0:
            return []  # the filter matches nothing kept
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout_s)
            except TimeoutError:
                break  # the filter matched nothing more up to the end
            try:
                events.append(json.loads(msg.data))
            except ValueError:
                events.append({"unreadable": msg.subject})
            if msg.metadata.sequence.stream >= last or msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return events[-limit:]
