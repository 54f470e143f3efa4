"""Whether the client's NATS connection is up, as an event: no request is written into a dead link's buffer.

nats-py keeps what is published while it reconnects and sends it all on reconnect, so a request
sent during an outage reaches the service late, for a caller that may have left. Its
``disconnected_cb``/``reconnected_cb`` belong to whoever calls ``nats.connect``: that code
passes :meth:`ConnectionState.callbacks` (chaining any callbacks of its own) and hands the same
object to :class:`~tts_actor.client.tts_client.TtsClient`, which then waits on the event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from tts_actor.errors import ErrorCode, TtsError

Callback = Callable[[], Awaitable[None]]


class ConnectionState:
    """Set while connected, cleared on disconnect; :meth:`wait_up` waits for reconnection."""

    def __init__(self) -> None:
        self._up = asyncio.Event()
        self._up.set()  # nats.connect returns connected; a disconnect clears it

    async def on_disconnected(self) -> None:
        self._up.clear()

    async def on_reconnected(self) -> None:
        self._up.set()

    def callbacks(self, disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None) -> dict:
        """Keyword arguments for ``nats.connect``; the caller's own callbacks, if any, run after ours."""

        async def disconnected() -> None:
            await self.on_disconnected()
            if disconnected_cb is not None:
                await disconnected_cb()

        async def reconnected() -> None:
            await self.on_reconnected()
            if reconnected_cb is not None:
                await reconnected_cb()

        return {"disconnected_cb": disconnected, "reconnected_cb": reconnected}

    async def wait_up(self, nc: Any, timeout_s: float) -> bool:
        """True once ``nc`` is connected, within ``timeout_s``; False when the time ran out first."""
        if nc.is_connected:
            return True
        self._up.clear()  # the link is down whatever the event says (a disconnect seen before we were attached)
        if timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), timeout_s)
        return bool(nc.is_connected)


async def wait_sendable(nc: Any, connection: ConnectionState | None, timeout_s: float) -> None:
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
