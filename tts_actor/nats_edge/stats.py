"""What ``$SRV.STATS`` carries in each endpoint's ``data``: per-backend state, queue depth, real-time factor.

So that ``nats micro stats tts`` alone shows, per instance, which backend is loaded, how much
waits, and how fast it speaks (synthesis seconds per second of audio: below 1 is faster than
real time). Figures come from the Prometheus metrics the synthesis path already keeps.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from tts_actor.lifecycle.registry import Registry


def _sample(name: str, backend: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": backend}) or 0.0


def real_time_factor(backend: str) -> float | None:
    """Synthesis seconds over audio seconds so far in this process; None before the first audio."""
    audio_s = _sample("tts_audio_seconds_total", backend)
    return round(_sample("tts_synthesis_seconds_sum", backend) / audio_s, 4) if audio_s > 0 else None


def endpoint_data(registry: Registry, inflight: int) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for name, actor in registry.actors.items():
        status = actor.status()
        backends[name] = {
            "state": status["state"],
            "reason": status["reason"],
            "queue": status["queue"],
            "rtf": real_time_factor(name),
            "audio_s": round(_sample("tts_audio_seconds_total", name), 3),
            "synthesized": int(_sample("tts_synthesis_seconds_count", name)),
        }
    return {"instance": registry.settings.instance, "inflight": inflight, "backends": backends}
