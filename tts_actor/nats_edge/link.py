"""How long the NATS connection has been down: what ``/healthz`` needs to tell the truth.

``nc.is_connected`` says "down now", which a one-second blip also says; liveness must fail only when
the connection has stayed down past a bound (TTS_HEALTH_NATS_GRACE_S). The connection's own callbacks
(:func:`tts_actor.nats_edge.connection.connect`) mark the moments, so nothing polls.
"""

from __future__ import annotations

import time


class LinkWatch:
    """When the connection was lost (monotonic), or None while it is up."""

    def __init__(self) -> None:
        self.lost_at: float | None = None
        self.losses = 0

    def lost(self) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self.losses += 1

    def back(self) -> None:
        self.lost_at = None

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
