"""What ``$SRV.STATS`` carries in each endpoint's ``data``: per-backend state, queues by priority, real-time factor.

So that ``nats micro stats tts`` alone shows, per instance, which backend is loaded, how much
waits, and how fast it speaks (engine seconds per second of audio: below 1 is faster than
real time). Figures are each actor's own totals (:attr:`BackendActor.stats`), not the
process-wide Prometheus samples, so another registry in the same process does not show up here.
"""

from __future__ import annotations

from typing import Any

from tts_actor.lifecycle.registry import Registry


def endpoint_data(registry: Registry, inflight: int) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for name, actor in registry.actors.items():
        status = actor.status()
        stats = actor.stats
        backends[name] = {
            "state": status["state"],
            "reason": status["reason"],
            "queue": status["queue"],
            "priorities": status["priorities"],
            "rtf": stats.real_time_factor,
            "rtf_recent": status["rtf_recent"],
            "audio_s": round(stats.audio_s, 3),
            "synthesized": stats.syntheses,
        }
    return {"instance": registry.settings.instance, "inflight": inflight, "backends": backends}
