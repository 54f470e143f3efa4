"""Prometheus metrics. Served over HTTP by :mod:`tts_actor.http_edge.probes` when TTS_METRICS_PORT is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from statemachine import State, StateEvent

REQUESTS = Counter("tts_requests_total", "Synthesis requests by outcome", ["backend", "outcome"])
SYNTHESIS_SECONDS = Histogram(
    "tts_synthesis_seconds",
    "Time from submitting one request's job to its last segment encoded (queue wait included)",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
FIRST_AUDIO_SECONDS = Histogram(
    "tts_first_audio_seconds",
    "From a request's arrival to its first audio message (queue wait included; streams send it after one segment)",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
DROPPED_LATE = Counter(
    "tts_dropped_late_total",
    "Requests not started because the caller's deadline passed: on arrival (backend '-') or while queued",
    ["backend"],
)
AUDIO_SECONDS = Counter("tts_audio_seconds_total", "Seconds of audio produced", ["backend"])
LOAD_SECONDS = Histogram(
    "tts_load_seconds", "Time to load a backend's model", ["backend"], buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)
)
BACKEND_STATE = Gauge("tts_backend_state", "1 for the state a backend is in, 0 for the others", ["backend", "state"])
TRANSITIONS = Counter("tts_state_transitions_total", "State transitions", ["backend", "to", "reason"])
DOWNLOAD_BYTES = Gauge("tts_download_bytes", "Bytes downloaded so far for the current download", ["backend"])
AUDIO_CACHE = Counter("tts_audio_cache_total", "Audio cache lookups by outcome (hit, miss, bypass)", ["outcome"])
NATS_PERMISSION_ERRORS = Counter(
    "tts_nats_permission_errors",
    "Subscriptions and publishes the NATS server refused (Permissions Violation), by operation",
    ["operation"],
)
EMBEDDED_NATS = Counter(
    "tts_embedded_nats_total", "Embedded nats-server lifecycle: exited, restarted, restart_failed, gave_up", ["event"]
)
HTTP_DROPPED = Counter(
    "tts_http_connections_dropped_total",
    "HTTP edge connections closed by the server: header_timeout, body_timeout, over_limit",
    ["reason"],
)
QUEUE_DEPTH = Gauge("tts_queue_depth", "Jobs waiting in a backend's inbox, by priority", ["backend", "priority"])
QUEUE_WAIT_SECONDS = Histogram(
    "tts_queue_wait_seconds",
    "From a job entering a backend's inbox to its first segment starting, by priority",
    ["backend", "priority"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
DEADLINE_REFUSALS = Counter(
    "tts_deadline_refusals_total",
    "Requests refused at once (deadline_unreachable): their first audio would have come after their deadline",
    ["backend", "priority"],
)
MEMORY_GUARD_BYTES = Gauge(
    "tts_memory_guard_bytes", "The configured memory guard (resident bytes) of this process; 0 when there is none"
)
MEMORY_GUARD_ACTIONS = Counter(
    "tts_memory_guard_actions_total",
    "What the memory guard did: tripped (stopped taking work), reloaded (backend unloaded and loaded), ineffective",
    ["backend", "action"],
)
INFLIGHT = Gauge("tts_inflight_requests", "Synthesis requests being served")


def record_state(event: StateEvent) -> None:
    for state in State:
        BACKEND_STATE.labels(event.backend, state.value).set(1 if state is event.to_state else 0)
    if event.progress is not None:
        DOWNLOAD_BYTES.labels(event.backend).set(event.progress.done)
    if event.from_state is not None and event.reason.value != "download_progress":
        TRANSITIONS.labels(event.backend, event.to_state.value, event.reason.value).inc()
