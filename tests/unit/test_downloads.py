"""Model downloads that can never hang: the actor and the model manager against a real local fake hub.

The backend under test is ``TinyVoiceBackend`` (tests/support/downloads.py), a real
adapter whose model is a small repository on the fake hub: the real backends need
multi-GB weights that cannot be downloaded here. Nothing is mocked but the
free-space probe (a disk cannot be filled on purpose in a test).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statemachine import Reason, State
from tests.support.downloads import (
    BACKEND,
    REPO,
    REPO_BYTES,
    REPO_FILES,
    EventLog,
    TinyVoiceBackend,
    files_under,
    make_settings,
)
from tests.support.fakehub import FakeHub, Fault, refused_url
from tts_actor.backends.base import ModelRef
from tts_actor.backends.model_manager import ModelManager
from tts_actor.config import Settings
from tts_actor.lifecycle.registry import Registry
from tts_actor.lifecycle.retry import RetryPolicy


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, REPO_FILES)
        yield fake


@pytest.fixture
def settings(tmp_path: Path, hub: FakeHub) -> Settings:
    return make_settings(tmp_path / "cache", hub.url)


class Harness:
    """A registry with the test backend, its manager and its events."""

    def __init__(self, settings: Settings, manager: ModelManager | None = None) -> None:
        self.settings = settings
        self.manager = manager or ModelManager(settings)
        self.events = EventLog()
        self.adapter = TinyVoiceBackend(settings)
        self.registry = Registry(settings, self.manager, self.events, adapters={BACKEND: self.adapter})
        self.actor = self.registry.actors[BACKEND]
        self.started = 0.0

    async def start(self) -> None:
        self.started = time.perf_counter()
        await self.registry.start()

    async def stop(self) -> None:
        await self.registry.stop()
        await self.manager.close()

    async def failed(self, timeout_s: float) -> tuple[float, Reason]:
        """Seconds from start to the published ``failed`` event, and its reason."""
        event = await self.events.until_state(State.FAILED, timeout_s)
        return time.perf_counter() - self.started, event.reason


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    running = Harness(settings)
    yield running
    await running.stop()


async def start(settings: Settings, manager: ModelManager | None = None) -> Harness:
    running = Harness(settings, manager)
    await running.start()
    return running


# --- happy paths -----------------------------------------------------------------
async def test_good_download_ends_loaded_with_progress(harness: Harness, settings: Settings) -> None:
    await harness.start()
    await harness.events.until_state(State.LOADED, 10)
    assert harness.events.moves() == [
        ("missing", "startup"),
        ("downloading", "download_started"),
        ("downloading", "download_complete"),
        ("loaded", "loaded_after_download"),
    ]
    progress = harness.events.progress()
    assert progress, "no progress event"
    assert progress[-1].progress is not None and progress[-1].progress.total == REPO_BYTES
    assert progress[-1].progress.done == REPO_BYTES
    assert harness.adapter.loaded_from is not None
    assert (harness.adapter.loaded_from / "model.safetensors").read_bytes() == REPO_FILES["model.safetensors"]
    assert files_under(settings.models_dir / ".incoming") == []


async def test_cached_model_loads_with_the_hub_off(hub: FakeHub, settings: Settings) -> None:
    first = await start(settings)
    await first.events.until_state(State.LOADED, 10)
    await first.stop()
    asked = len(hub.requests)
    hub.stop()
    second = await start(settings.with_(allow_download=False))
    try:
        event = await second.events.until_state(State.LOADED, 5)
    finally:
        await second.stop()
    assert event.reason is Reason.LOADED_FROM_CACHE
    assert "downloading" not in [to for to, _ in second.events.moves()]
    assert len(hub.requests) == asked


async def test_slow_hub_within_the_bound_loads(hub: FakeHub, harness: Harness) -> None:
    hub.set_fault(REPO, Fault.SLOW, slow_delay_s=0.4)  # gaps under the 1 s read timeout
    await harness.start()
    await harness.events.until_state(State.LOADED, 15)
    assert len(harness.events.progress()) >= 2


# --- bounded failures ------------------------------------------------------------
@pytest.mark.parametrize("endpoint", [refused_url, lambda: "http://hub.invalid"], ids=["refused", "unresolvable"])
async def test_unreachable_hub_fails_hub_unreachable_fast(tmp_path: Path, endpoint: Callable[[], str]) -> None:
    running = await start(make_settings(tmp_path, endpoint()))
    try:
        seconds, reason = await running.failed(5)
    finally:
        await running.stop()
    assert reason is Reason.HUB_UNREACHABLE
    assert seconds < 2.0


async def test_silent_hub_fails_within_the_read_timeout(hub: FakeHub, harness: Harness) -> None:
    hub.set_fault(REPO, Fault.SILENT)
    await harness.start()
    seconds, reason = await harness.failed(10)
    assert reason is Reason.HUB_UNREACHABLE
    assert harness.settings.download_read_timeout_s <= seconds < harness.settings.download_read_timeout_s + 2


@pytest.mark.parametrize("fault", [Fault.TRUNCATE, Fault.BAD_HASH])
async def test_cut_short_or_wrong_hash_is_corrupt_and_leaves_nothing(
    hub: FakeHub, harness: Harness, settings: Settings, fault: Fault
) -> None:
    hub.set_fault(REPO, fault, only="model.safetensors")  # config.json (first) arrives whole
    await harness.start()
    _, reason = await harness.failed(10)
    assert reason is Reason.CORRUPT_MODEL
    assert "model.safetensors" in (harness.actor.lifecycle.message or "")
    assert files_under(settings.models_dir) == []
    assert harness.manager.find_local((ModelRef(REPO),)) is None
    assert harness.adapter.loaded_from is None


@pytest.mark.parametrize("fault", [Fault.NOT_FOUND, Fault.UNAUTHORIZED, Fault.FORBIDDEN])
async def test_missing_or_gated_repo_is_unavailable_with_fix(hub: FakeHub, harness: Harness, fault: Fault) -> None:
    hub.set_fault(REPO, fault)
    await harness.start()
    _, reason = await harness.failed(5)
    assert reason is Reason.MODEL_UNAVAILABLE
    fix = harness.actor.lifecycle.fix or ""
    assert "HF_TOKEN" in fix and "TTS_<BACKEND>_REPO" in fix
    assert not harness.actor.supervisor.armed  # a config change is needed: not retried on its own


async def test_too_little_disk_is_disk_full_with_both_sizes(hub: FakeHub, settings: Settings) -> None:
    running = await start(settings, ModelManager(settings, free_space=lambda _path: 1234))
    try:
        _, reason = await running.failed(5)
    finally:
        await running.stop()
    assert reason is Reason.DISK_FULL
    message = running.actor.lifecycle.message or ""
    assert str(REPO_BYTES) in message and "1234" in message
    assert not [p for p in hub.requests if "/resolve/" in p]  # checked before the first byte


async def test_offline_fails_at_once_naming_fetch(hub: FakeHub, settings: Settings) -> None:
    running = await start(settings.with_(allow_download=False))
    try:
        seconds, reason = await running.failed(2)
    finally:
        await running.stop()
    assert reason is Reason.OFFLINE
    assert f"tts-actor fetch {BACKEND}" in (running.actor.lifecycle.fix or "")
    assert seconds < 0.5
    assert hub.requests == []


async def test_watchdog_fails_a_download_without_progress(hub: FakeHub, settings: Settings) -> None:
    hub.set_fault(REPO, Fault.HOLD)  # headers never come; the read timeout is far away
    running = await start(settings.with_(download_read_timeout_s=30.0, download_stall_timeout_s=1.0))
    try:
        seconds, reason = await running.failed(5)
    finally:
        hub.release()
        await running.stop()
    assert reason is Reason.DOWNLOAD_STALLED
    assert 1.0 <= seconds < 3.0
    assert files_under(settings.models_dir) == []


# --- retry -----------------------------------------------------------------------
async def test_retry_on_demand_after_the_hub_is_fixed(hub: FakeHub, harness: Harness) -> None:
    hub.set_fault(REPO, Fault.NOT_FOUND)
    await harness.start()
    await harness.failed(5)
    hub.set_fault(REPO, Fault.NONE)
    harness.actor.retry()
    await harness.events.until_state(State.LOADED, 10)
    assert harness.events.moves()[-4:] == [
        ("failed", "model_unavailable"),
        ("downloading", "retry"),
        ("downloading", "download_complete"),
        ("loaded", "loaded_after_download"),
    ]


async def test_automatic_retry_backs_off_then_loads(hub: FakeHub, settings: Settings) -> None:
    hub.set_fault(REPO, Fault.TRUNCATE)
    running = await start(settings.with_(retry_max_attempts=3, retry_backoff_initial_s=0.3))
    try:
        failed = await running.events.until_state(State.FAILED, 5)
        hub.set_fault(REPO, Fault.NONE)
        retry = await running.events.until(lambda e: e.reason is Reason.RETRY, 5)
        # measured between the two events' own timestamps, not when this test got to see them
        retried_after = (datetime.fromisoformat(retry.at) - datetime.fromisoformat(failed.at)).total_seconds()
        await running.events.until_state(State.LOADED, 10)
    finally:
        await running.stop()
    assert failed.detail["retry_in_s"] == 0.3 and failed.detail["retry_attempt"] == 1
    assert retry.from_state is State.FAILED
    assert 0.28 <= retried_after < 2.0
    assert running.actor.supervisor.attempt == 0  # loaded: the backoff starts over next time


def test_backoff_doubles_up_to_the_cap_and_stops() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=5.0, max_attempts=5)
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, None]
    assert not RetryPolicy.retries(Reason.PACKAGE_MISSING)
    assert RetryPolicy.retries(Reason.HUB_UNREACHABLE)


# --- sharing and shutdown --------------------------------------------------------
async def test_concurrent_waiters_share_one_download(hub: FakeHub, settings: Settings) -> None:
    manager = ModelManager(settings)
    seen: list[list[int]] = [[], []]
    try:
        results = await asyncio.gather(
            *(manager.fetch(f"b{i}", (ModelRef(REPO),), lambda d, _t, i=i: seen[i].append(d)) for i in range(2))
        )
    finally:
        await manager.close()
    assert results[0] == results[1]
    assert len([p for p in hub.requests if "/resolve/" in p]) == len(REPO_FILES)
    assert len([p for p in hub.requests if p.startswith("/api/")]) == 1
    assert seen[0] and seen[1]


async def test_shutdown_cancels_a_download_and_leaves_no_partial_file(hub: FakeHub, settings: Settings) -> None:
    hub.set_fault(REPO, Fault.SLOW, slow_delay_s=0.5)
    running = await start(settings)
    await running.events.until(lambda e: e.reason is Reason.DOWNLOAD_PROGRESS and bool(e.progress.done), 5)
    began = time.perf_counter()
    await running.stop()
    assert time.perf_counter() - began < settings.download_read_timeout_s + 2
    assert not running.manager._threads  # no thread left writing
    assert files_under(settings.models_dir) == []
    assert running.manager.find_local((ModelRef(REPO),)) is None


# --- traces ----------------------------------------------------------------------
async def test_spans_for_download_and_load(spans: InMemorySpanExporter, harness: Harness) -> None:
    spans.clear()
    await harness.start()
    await harness.events.until_state(State.LOADED, 10)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    download, load, repo = by_name["tts.download"], by_name["tts.load"], by_name["tts.download.repo"]
    assert download.attributes["tts.repo"] == REPO
    assert download.attributes["tts.bytes"] == REPO_BYTES
    assert download.attributes["tts.outcome"] == "ok"
    assert download.attributes["tts.device"] == "cpu"
    assert download.attributes["tts.duration_s"] >= 0
    assert [e.attributes["tts.reason"] for e in download.events] == ["download_started", "download_complete"]
    assert load.attributes["tts.outcome"] == "ok" and load.attributes["tts.device"] == "cpu"
    assert [e.attributes["tts.to"] for e in load.events] == ["loaded"]
    assert repo.attributes["tts.bytes"] == REPO_BYTES and repo.attributes["tts.outcome"] == "ok"


async def test_failed_download_span_names_the_reason(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    spans.clear()
    running = await start(make_settings(tmp_path, refused_url()))
    try:
        await running.failed(5)
    finally:
        await running.stop()
    download = next(s for s in spans.get_finished_spans() if s.name == "tts.download")
    assert download.attributes["tts.outcome"] == "hub_unreachable"
    assert [e.attributes["tts.to"] for e in download.events] == ["downloading", "failed"]


# --- the CLI ---------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` configures logging onto the captured stderr; undo it so later tests can log."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_fetch_cli_downloads_then_fails_for_a_missing_repo(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tts_actor import backends
    from tts_actor.cli import main as cli

    monkeypatch.setitem(backends.ADAPTERS, BACKEND, TinyVoiceBackend)
    monkeypatch.setenv("TTS_HF_ENDPOINT", hub.url)
    monkeypatch.setenv("TTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TTS_ALLOW_DOWNLOAD", raising=False)
    assert cli.main(["fetch", BACKEND]) == 0
    manager = ModelManager(make_settings(tmp_path / "cache", hub.url))
    assert manager.find_local((ModelRef(REPO),)) is not None

    hub.set_fault(REPO, Fault.NOT_FOUND)
    monkeypatch.setenv("TTS_CACHE_DIR", str(tmp_path / "other-cache"))
    capsys.readouterr()
    assert cli.main(["fetch", BACKEND]) == 1
    err = capsys.readouterr().err
    assert "model_unavailable" in err and "fix:" in err and "HF_TOKEN" in err

    assert cli.main(["fetch", "no-such-backend"]) == 2


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9", "http://[::1"], ids=["no-scheme", "invalid-url"])
def test_unusable_endpoint_is_download_failed_with_the_fix(endpoint: str) -> None:
    from tts_actor.backends.base import BackendFailure
    from tts_actor.backends.hub import HubClient

    with pytest.raises(BackendFailure) as info:
        HubClient(endpoint, 1.0, 1.0).snapshot(REPO, "main")
    assert info.value.reason is Reason.DOWNLOAD_FAILED
    assert "https://" in info.value.fix


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_filling_up_during_a_transfer_is_disk_full(hub: FakeHub, tmp_path: Path) -> None:
    """The space check passed but the disk filled up meanwhile: /dev/full answers every write with ENOSPC."""
    import threading

    from tts_actor.backends.base import BackendFailure
    from tts_actor.backends.hub import HubClient

    client = HubClient(hub.url, 2.0, 2.0)
    snapshot = client.snapshot(REPO, "main")
    remote = max(snapshot.files, key=lambda f: f.size)
    dest = tmp_path / "part"
    dest.symlink_to("/dev/full")
    with pytest.raises(BackendFailure) as info:
        client.download(REPO, snapshot.commit, remote, dest, lambda n: None, threading.Event())
    assert info.value.reason is Reason.DISK_FULL
    assert not dest.is_symlink(), "the partial file is removed"
    assert Path("/dev/full").exists()


async def test_two_file_sets_of_one_repository_both_arrive(hub: FakeHub, tmp_path: Path) -> None:
    """One backend, two models in one repository (Chatterbox English + multilingual)."""
    manager = ModelManager(make_settings(tmp_path / "cache", hub.url))
    first = ModelRef(REPO, allow_patterns=("config.json",), key="first")
    second = ModelRef(REPO, allow_patterns=("vocab.json", "*.safetensors"), key="second")
    try:
        together = await manager.fetch("tiny", (first, second), lambda done, total: None)
        assert (together["first"] / "config.json").is_file()
        assert (together["second"] / "vocab.json").is_file()
        assert (together["second"] / "model.safetensors").is_file()
        assert manager.find_local((first, second)) is not None
    finally:
        await manager.close()

    # the cache holds only the first set: the second is not taken for present
    fresh = ModelManager(make_settings(tmp_path / "other", hub.url))
    try:
        await fresh.fetch("tiny", (first,), lambda done, total: None)
        assert fresh.find_one(first) is not None
        assert fresh.find_one(second) is None
    finally:
        await fresh.close()
