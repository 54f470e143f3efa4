"""Waiting until a request can be written: never into a dead link's buffer (see :mod:`tts_actor.wire.link`)."""

from __future__ import annotations

from typing import Any

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.link import LinkState


async def wait_sendable(nc: Any, connection: LinkState | None, timeout_s: float) -> None:
    """Return once ``nc`` is connected: at once, or on reconnection within ``timeout_s`` when ``connection`` is
    given; else raise ``backend_not_ready`` (503 at the HTTP edge: the service cannot be reached), not retried."""
    if nc.is_connected:
        return
    if connection is not None and await connection.wait_up(nc, timeout_s):
        return
    waited = " until the caller's deadline" if connection is not None else ""
    raise TtsError(
        ErrorCode.BACKEND_NOT_READY,
        f"the NATS connection is down{waited}; the request was not sent",
        "Check that nats-server is reachable (NATS_URL); send the request again once it is back.",
    )
