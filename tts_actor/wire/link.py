"""Whether the NATS link is up: an event a sender waits on, and since when it is down, for ``/healthz``.

nats-py keeps what is published while it reconnects and sends it all on reconnect, so a request
written during an outage reaches the service late, for a caller that may have left; and
``nc.is_connected`` says "down now", which a one-second blip also says, while liveness must fail
only past a bound (TTS_HEALTH_NATS_GRACE_S). The connection's own callbacks mark the moments
(:func:`tts_actor.nats_edge.connection.connect` does it; code that calls ``nats.connect`` itself
passes :meth:`LinkState.callbacks`), so nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

Callback = Callable[[], Awaitable[None]]


class LinkState:
    """Set while connected, cleared on disconnect; when the link was lost (monotonic), None while up."""

    def __init__(self) -> None:
        self._up = asyncio.Event()
        self._up.set()  # nats.connect returns connected; a disconnect clears it
        self.lost_at: float | None = None
        self.losses = 0

    def lost(self) -> None:
        self._up.clear()
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self.losses += 1

    def back(self) -> None:
        self._up.set()
        self.lost_at = None

    def callbacks(self, disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None) -> dict:
        """Keyword arguments for ``nats.connect``; the caller's own callbacks, if any, run after ours."""

        async def disconnected() -> None:
            self.lost()
            if disconnected_cb is not None:
                await disconnected_cb()

        async def reconnected() -> None:
            self.back()
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

    def down_for_s(self) -> float:
        """Seconds since the connection went down; 0 while it is up."""
        return 0.0 if self.lost_at is None else time.monotonic() - self.lost_at

    def verdict(self, grace_s: float) -> dict[str, object] | None:
        """None while healthy; else why not, as the JSON body of a failing ``/healthz``."""
        down = self.down_for_s()
        if down <= grace_s:
            return None
        return {
            "status": "unhealthy",
            "nats": "disconnected",
            "reason": f"no NATS connection for {down:.1f} s (grace {grace_s:g} s)",
            "down_s": round(down, 1),
            "fix": "check the NATS server (the embedded one restarts itself a few times; see embedded_nats_* logs); "
            "restarting this process is the next step",
        }
