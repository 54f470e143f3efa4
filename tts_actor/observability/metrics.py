"""Prometheus metrics. Served over HTTP by :mod:`tts_actor.http_edge.probes` when TTS_METRICS_PORT is set.

The alert rules in ``ops/prometheus/alerts.yml`` read these (and ``process_resident_memory_bytes``, ``up``);
``tests/unit/test_alert_rules.py`` checks that every metric a rule names is one registered here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

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
AUDIO_CACHE = Counter(
    "tts_audio_cache_total", "Audio cache lookups by outcome (hit, miss, bypass, joined)", ["outcome"]
)
AUDIO_CACHE_MEMORY_BYTES = Gauge(
    "tts_audio_cache_memory_bytes", "Bytes of hot cached audio held in this instance's memory"
)
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
BACKEND_FAILED = Gauge(
    "tts_backend_failed_reason",
    "1 while a backend is failed, labelled with why (the series goes when it recovers)",
    ["backend", "reason"],
)
DOWNLOAD_PROGRESS_AT = Gauge(
    "tts_download_progress_timestamp_seconds",
    "Unix time of a download's last sign of life (its start or its last progress event): a stall's clock",
    ["backend"],
)
LANGUAGE_READY = Gauge(
    "tts_language_ready",
    "1 when a backend here that speaks the language is ready (or loads on demand), 0 for a configured one not",
    ["language"],
)
FLEET_INSTANCES = Gauge("tts_fleet_instances", "Instances in the fleet as this instance's state KV watch sees them")
STATE_KV_UP = Gauge("tts_state_kv_up", "1 when the last write to the state KV bucket went through, 0 while it fails")
AUDIO_CACHE_WRITES = Counter("tts_audio_cache_writes_total", "Audio cache puts by outcome (ok, failed)", ["outcome"])
NATS_CONNECTED = Gauge("tts_nats_connected", "1 while the service's NATS connection is up")
_failed_reasons: dict[str, str] = {}  # backend -> the reason label its tts_backend_failed_reason series carries


def record_state(event: StateEvent) -> None:
    for state in State:
        BACKEND_STATE.labels(event.backend, state.value).set(1 if state is event.to_state else 0)
    if event.progress is not None:
        DOWNLOAD_BYTES.labels(event.backend).set(event.progress.done)
    if event.to_state is State.DOWNLOADING:
        DOWNLOAD_PROGRESS_AT.labels(event.backend).set(time.time())
    _record_failure(event)
    if event.from_state is not None and event.reason.value != "download_progress":
        TRANSITIONS.labels(event.backend, event.to_state.value, event.reason.value).inc()


def _record_failure(event: StateEvent) -> None:
    """One series per failed backend, labelled with the current reason; none once it is out of ``failed``."""
    previous = _failed_reasons.pop(event.backend, None)
    if previous is not None:
        BACKEND_FAILED.remove(event.backend, previous)
    if event.to_state is State.FAILED:
        _failed_reasons[event.backend] = event.reason.value
        BACKEND_FAILED.labels(event.backend, event.reason.value).set(1)


def record_languages(ready: Mapping[str, bool]) -> None:
    """Every configured language, 1 when a backend here can serve it now (loaded or loading on demand)."""
    for language, is_ready in ready.items():
        LANGUAGE_READY.labels(language).set(1 if is_ready else 0)
