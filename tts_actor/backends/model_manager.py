"""Model files from the Hugging Face hub: local cache first, then a bounded download.

The cache is huggingface_hub's own layout (:mod:`tts_actor.backends.model_cache`, which
finds and installs snapshots); this module is the download. It is staged in
``models_dir/.incoming/``; each file is verified (size, and sha256 or git blob id)
before the cache installs it, so a snapshot is only ever found complete.

Bounds, each with its own setting: connect and read timeouts per request
(:mod:`tts_actor.backends.hub`), a watchdog that fails a transfer with no new bytes for
``download_stall_timeout_s``, and ``download_total_timeout_s`` for the whole.
One transfer per repository at a time, shared by every caller that waits for it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.trace import Status, StatusCode

from statemachine import Reason
from tts_actor.backends.base import BackendFailure, ModelRef
from tts_actor.backends.hub import HubClient, RemoteFile, RepoSnapshot, TransferCancelled
from tts_actor.backends.model_cache import disk_free_bytes, find_snapshot, install_snapshot, repo_folder
from tts_actor.config import Settings
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import tracer

log = get_logger(__name__)

ProgressCallback = Callable[[int, "int | None"], None]
FreeSpaceProbe = Callable[[Path], int]
DEFAULT_REVISION = "main"


@dataclass
class Transfer:
    """One repository being downloaded; shared by every waiter, written by one thread."""

    repo_id: str
    revision: str
    total: int | None = None
    done: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    listeners: list[ProgressCallback] = field(default_factory=list)
    task: asyncio.Task[Path] | None = None

    def add_bytes(self, count: int) -> None:
        self.done += count
        self.last_progress = time.monotonic()
        self._notify()

    def set_total(self, total: int) -> None:
        self.total = total
        self.last_progress = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self.done, self.total)


class ModelManager:
    """Finds models in the local cache and fetches missing ones, bounded; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        free_space: FreeSpaceProbe = disk_free_bytes,
        endpoint: str | None = None,
    ) -> None:
        self.settings = settings
        self.models_dir = settings.models_dir
        self.endpoint = (endpoint or settings.hf_endpoint).rstrip("/")
        self._free_space = free_space
        self._inflight: dict[tuple[str, str, tuple[str, ...]], Transfer] = {}
        self._threads: set[asyncio.Future[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tts-download")
        self._closed = False

    def _hub(self) -> HubClient:
        s = self.settings
        token = s.hf_token or os.environ.get("HF_TOKEN") or None
        return HubClient(self.endpoint, s.download_connect_timeout_s, s.download_read_timeout_s, token)

    # --- local ---------------------------------------------------------------
    def find_local(self, refs: tuple[ModelRef, ...]) -> dict[str, Path] | None:
        """Snapshot folders for all of ``refs`` from the cache, or None if any is missing. No network."""
        dirs: dict[str, Path] = {}
        for ref in refs:
            found = self.find_one(ref)
            if found is None:
                return None
            dirs[ref.key] = found
        return dirs

    def find_one(self, ref: ModelRef) -> Path | None:
        """``ref``'s snapshot folder from the cache, or None. No network."""
        return find_snapshot(self.models_dir, ref)

    # --- fetching ------------------------------------------------------------
    async def fetch(self, backend: str, refs: tuple[ModelRef, ...], on_progress: ProgressCallback) -> dict[str, Path]:
        """Snapshot folders for ``refs``, downloading what the cache lacks; raises :class:`BackendFailure`."""
        if self._closed:
            raise BackendFailure(Reason.DOWNLOAD_FAILED, f"{backend}: shutting down", "Restart the service.")
        if not self.settings.allow_download:
            raise BackendFailure(
                Reason.OFFLINE,
                f"{backend}: downloads are off (HF_HUB_OFFLINE=1 or TTS_ALLOW_DOWNLOAD=0)",
                "Unset HF_HUB_OFFLINE and set TTS_ALLOW_DOWNLOAD=1 for `tts-actor fetch`, on a host with network.",
            )
        progress: dict[str, tuple[int, int | None]] = {}

        def report(key: str, done: int, total: int | None) -> None:
            progress[key] = (done, total)
            totals = [t for _, t in progress.values()]
            overall = None if any(t is None for t in totals) else sum(t or 0 for t in totals)
            on_progress(sum(d for d, _ in progress.values()), overall)

        dirs: dict[str, Path] = {}
        for ref in refs:
            local = await asyncio.to_thread(self.find_one, ref)
            if local is not None:
                dirs[ref.key] = local
                continue
            transfer = self._transfer_for(ref)

            def listener(done: int, total: int | None, key: str = ref.key) -> None:
                report(key, done, total)

            transfer.listeners.append(listener)
            try:
                assert transfer.task is not None
                # shielded: one waiter giving up does not cancel the others' transfer
                dirs[ref.key] = await asyncio.shield(transfer.task)
            finally:
                transfer.listeners.remove(listener)
        return dirs

    def _transfer_for(self, ref: ModelRef) -> Transfer:
        """The in-flight transfer for ``ref``'s repository, started if there is none."""
        # one transfer per repository and file set: two file sets of one repository are two transfers
        key = (ref.repo_id, ref.revision or DEFAULT_REVISION, tuple(ref.allow_patterns or ()))
        transfer = self._inflight.get(key)
        if transfer is None:
            transfer = Transfer(ref.repo_id, ref.revision or DEFAULT_REVISION)
            transfer.task = asyncio.create_task(self._download(ref, transfer))
            self._inflight[key] = transfer
            transfer.task.add_done_callback(lambda _t: self._inflight.pop(key, None))
            transfer.task.add_done_callback(_consume_exception)
        return transfer

    async def _download(self, ref: ModelRef, transfer: Transfer) -> Path:
        started = time.monotonic()
        s = self.settings
        with tracer().start_as_current_span(
            "tts.download.repo", attributes={"tts.repo": ref.repo_id, "tts.revision": transfer.revision}
        ) as span:
            outcome = "ok"
            try:
                path = await asyncio.wait_for(self._watched(ref, transfer), s.download_total_timeout_s)
                log.info("model_downloaded", repo=ref.repo_id, bytes=transfer.done, path=str(path))
                return path
            except TimeoutError:
                outcome = Reason.DOWNLOAD_FAILED.value
                raise BackendFailure(
                    Reason.DOWNLOAD_FAILED,
                    f"{ref.repo_id}: download took over TTS_DOWNLOAD_TOTAL_TIMEOUT_S={s.download_total_timeout_s} s "
                    f"({transfer.done} of {transfer.total} bytes)",
                    "Raise TTS_DOWNLOAD_TOTAL_TIMEOUT_S for big models on slow links, or pre-fetch with "
                    "`tts-actor fetch <backend>`.",
                    {"repo": ref.repo_id, "done": transfer.done, "total": transfer.total},
                ) from None
            except BackendFailure as failure:
                outcome = failure.reason.value
                span.set_status(Status(StatusCode.ERROR, failure.message))
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                span.set_attribute("tts.outcome", outcome)
                span.set_attribute("tts.bytes", transfer.done)
                span.set_attribute("tts.total_bytes", transfer.total or 0)
                span.set_attribute("tts.duration_s", round(time.monotonic() - started, 3))

    async def _watched(self, ref: ModelRef, transfer: Transfer) -> Path:
        """Run the blocking transfer on a thread; fail it when no byte arrives for the stall timeout."""
        loop = asyncio.get_running_loop()
        stall_s = self.settings.download_stall_timeout_s
        work = loop.run_in_executor(self._executor, self._download_blocking, ref, transfer)
        self._threads.add(work)
        work.add_done_callback(self._threads.discard)
        work.add_done_callback(_consume_exception)
        stalled: asyncio.Future[float] = loop.create_future()
        timer: list[asyncio.TimerHandle] = []

        def check() -> None:
            idle = time.monotonic() - transfer.last_progress
            if idle >= stall_s:
                if not stalled.done():
                    stalled.set_result(idle)
            else:
                timer[:] = [loop.call_later(stall_s - idle, check)]

        timer.append(loop.call_later(stall_s, check))
        try:
            await asyncio.wait({work, stalled}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                return work.result()
            raise BackendFailure(
                Reason.DOWNLOAD_STALLED,
                f"{ref.repo_id}: no progress for {stall_s} s at {transfer.done} of {transfer.total} bytes "
                "(TTS_DOWNLOAD_STALL_TIMEOUT_S)",
                "The hub or the network stalled; the download is retried with backoff, "
                "or run `tts-actor retry <backend>`.",
                {"repo": ref.repo_id, "done": transfer.done, "total": transfer.total},
            )
        finally:
            timer[0].cancel()
            if not stalled.done():
                stalled.cancel()
            if not work.done():
                transfer.cancelled.set()  # the thread stops at its next chunk or read timeout, removing its file

    def _download_blocking(self, ref: ModelRef, transfer: Transfer) -> Path:
        """List, check space, download to a staging folder, verify, then install. Runs on a thread."""
        hub = self._hub()
        revision = transfer.revision
        snapshot = hub.snapshot(ref.repo_id, revision)
        wanted = self._wanted(snapshot, ref)
        transfer.set_total(sum(f.size for f in wanted))
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._check_space(ref.repo_id, sum(f.size for f in wanted))
        staging = self.models_dir / ".incoming" / f"{repo_folder(self.models_dir, ref.repo_id).name}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            staged: list[tuple[RemoteFile, Path]] = []
            for index, remote in enumerate(wanted):
                part = staging / f"{index}.part"
                hub.download(ref.repo_id, snapshot.commit, remote, part, transfer.add_bytes, transfer.cancelled)
                staged.append((remote, part))
            if transfer.cancelled.is_set():
                raise TransferCancelled(ref.repo_id)
            return install_snapshot(self.models_dir, ref.repo_id, revision, snapshot.commit, staged)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _wanted(snapshot: RepoSnapshot, ref: ModelRef) -> list[RemoteFile]:
        from huggingface_hub.utils import filter_repo_objects

        patterns = list(ref.allow_patterns) if ref.allow_patterns else None
        return list(filter_repo_objects(snapshot.files, allow_patterns=patterns, key=lambda f: f.name))

    def _check_space(self, repo_id: str, needed: int) -> None:
        free = self._free_space(self.models_dir)
        if free < needed:
            raise BackendFailure(
                Reason.DISK_FULL,
                f"{repo_id}: needs {needed} bytes ({needed / 2**20:.1f} MiB) but {self.models_dir} has only "
                f"{free} bytes ({free / 2**20:.1f} MiB) free",
                f"Free space under {self.models_dir}, or point TTS_CACHE_DIR at a larger disk.",
                {"repo": repo_id, "needed_bytes": needed, "free_bytes": free, "path": str(self.models_dir)},
            )

    # --- shutdown ------------------------------------------------------------
    async def close(self) -> None:
        """Cancel transfers and wait (bounded by the read timeout) until no thread is writing."""
        self._closed = True
        for transfer in list(self._inflight.values()):
            transfer.cancelled.set()
            if transfer.task is not None:
                transfer.task.cancel()
        tasks = [t.task for t in self._inflight.values() if t.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._threads:
            bound = self.settings.download_connect_timeout_s + self.settings.download_read_timeout_s + 1
            await asyncio.wait(list(self._threads), timeout=bound)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _consume_exception(future: asyncio.Future[object]) -> None:
    """Mark an exception as seen: a transfer nobody waits for any more must not log 'never retrieved'."""
    if not future.cancelled():
        future.exception()
