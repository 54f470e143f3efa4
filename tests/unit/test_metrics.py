"""What the alert rules read from the state events: the failed backend's reason, and a download's last sign of life."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from statemachine import BackendLifecycle, Reason
from tts_actor.observability import metrics


def failed_reasons(backend: str) -> dict[str, float]:
    """reason -> value of every ``tts_backend_failed_reason`` series of ``backend`` exposed now."""
    return {
        s.labels["reason"]: s.value
        for family in REGISTRY.collect()
        if family.name == "tts_backend_failed_reason"
        for s in family.samples
        if s.labels["backend"] == backend
    }


def test_a_failed_backend_is_one_series_with_its_current_reason_gone_once_it_recovers() -> None:
    machine = BackendLifecycle("metrics-unit", "test")
    machine.subscribe(metrics.record_state)
    machine.start_download(total=100)
    assert failed_reasons("metrics-unit") == {}
    machine.fail(Reason.HUB_UNREACHABLE, "check the hub", "no route")
    assert failed_reasons("metrics-unit") == {"hub_unreachable": 1.0}
    machine.retry()
    assert failed_reasons("metrics-unit") == {}  # downloading again: no failure to alert on
    machine.fail(Reason.DISK_FULL, "free space", "no space left")
    assert failed_reasons("metrics-unit") == {"disk_full": 1.0}  # the new reason only, not the old one
    machine.reset()
    assert failed_reasons("metrics-unit") == {}


def test_a_download_stamps_its_start_and_each_progress() -> None:
    machine = BackendLifecycle("metrics-dl", "test")
    machine.subscribe(metrics.record_state)

    def stamp() -> float | None:
        return REGISTRY.get_sample_value("tts_download_progress_timestamp_seconds", {"backend": "metrics-dl"})

    before = time.time()
    machine.start_download(total=100)
    started = stamp()
    assert started is not None and before <= started <= time.time()
    machine.report_progress(50, 100)
    progressed = stamp()
    assert progressed is not None and progressed >= started
    assert REGISTRY.get_sample_value("tts_download_bytes", {"backend": "metrics-dl"}) == 50
    machine.fail(Reason.DOWNLOAD_STALLED, "retry", "no byte for 30 s")  # out of downloading: the stamp stays
    assert stamp() == progressed


def test_languages_are_exposed_ready_or_not() -> None:
    metrics.record_languages({"xx": True, "yy": False})
    assert REGISTRY.get_sample_value("tts_language_ready", {"language": "xx"}) == 1
    assert REGISTRY.get_sample_value("tts_language_ready", {"language": "yy"}) == 0


def test_the_memory_guard_gauge_is_exposed_without_labels() -> None:
    """Named as the "memory near guard" alert reads it (TTS_MAX_RSS_BYTES sets it; 0: no guard)."""
    assert REGISTRY.get_sample_value("tts_memory_guard_bytes") is not None
