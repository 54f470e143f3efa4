"""Bring-up: package probe, license, model fetch (progress, a download span), load (a load span).

Runs as one background task while the phase is BRINGING_UP; every way it can end is a
named FSM state (a bug in an adapter included), recorded through the supervisor so that
failures time can heal are retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import structlog
from opentelemetry.trace import Span, Status, StatusCode

from statemachine import BackendLifecycle, Reason, State, StateEvent, Trigger
from tts_actor.backends.base import BackendFailure, ModelRef, classify_load_error, license_refusal, missing_packages
from tts_actor.config import Settings
from tts_actor.lifecycle import refusals
from tts_actor.lifecycle.engine import Engine
from tts_actor.lifecycle.phase import Phase, PhaseState
from tts_actor.lifecycle.supervision import Supervisor
from tts_actor.observability import metrics
from tts_actor.observability.tracing import tracer

ProgressCallback = Callable[[int, "int | None"], None]
PROGRESS_EVERY_S = 0.25  # download progress events at most this often (the last one always)


class ModelStore(Protocol):
    """Where model files come from: the local cache first, then a bounded download."""

    def find_local(self, refs: tuple[ModelRef, ...]) -> dict[str, Path] | None: ...

    async def fetch(
        self, backend: str, refs: tuple[ModelRef, ...], on_progress: ProgressCallback
    ) -> dict[str, Path]: ...


def snapshot_revision(model_dirs: dict[str, Path]) -> str | None:
    """``key=<snapshot dir>`` per model: the model manager's snapshot directories are named by hub commit."""
    if not model_dirs:
        return None
    return ",".join(f"{key}={path.name}" for key, path in sorted(model_dirs.items()))


class BringUp:
    """Probe, fetch and load one backend, in a background task; one at a time."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        store: ModelStore | None,
        lifecycle: BackendLifecycle,
        phases: PhaseState,
        supervisor: Supervisor,
        on_loaded: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._engine = engine
        self._adapter = engine.adapter
        self._name = engine.adapter.name
        self._settings = settings
        self._store = store
        self._lifecycle = lifecycle
        self._phases = phases
        self._supervisor = supervisor
        self._on_loaded = on_loaded
        self._spawn = spawn
        self._log = log
        self._span: Span | None = None  # the download or load span that state events are recorded on
        self._last_progress_at = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None  # set on start: download threads report through it
        self.model_revision: str | None = None  # the loaded snapshots (hub commits), for audio cache keys

    def start(self) -> bool:
        """Begin a bring-up unless something else is under way (another one, an unload, a shutdown)."""
        if not self._phases.enter(Phase.BRINGING_UP):
            return False
        self._spawn(self._run())
        return True

    def record(self, event: StateEvent) -> None:
        """Put a state change on the download or load span in progress, if any."""
        if self._span is not None and event.reason is not Reason.DOWNLOAD_PROGRESS:
            self._span.add_event(
                "state_change",
                {
                    "tts.from": event.from_state.value if event.from_state else "",
                    "tts.to": event.to_state.value,
                    "tts.reason": event.reason.value,
                    "tts.seq": event.seq,
                },
            )

    async def _run(self) -> None:
        spec = self._adapter.spec
        try:
            refusal = license_refusal(spec, self._settings.accepted_licenses)
            missing = missing_packages(spec.packages)
            if self._lifecycle.current is State.FAILED and (refusal or missing or not self._adapter.models()):
                # nothing to download: start over from missing (a download retry goes failed → downloading)
                self._lifecycle.reset(message="retrying")
            if missing:
                self._supervisor.fail(refusals.packages_missing(self._name, missing, spec.install_fix))
                return
            if refusal:  # before any download: no weights are fetched under terms nobody accepted
                self._supervisor.fail(refusal)
                return
            model_dirs = await self._model_dirs()
            if model_dirs is None:
                return
            await self._load(model_dirs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in an adapter still ends in a named state
            self._log.exception("bring_up_crashed")
            self._supervisor.fail(classify_load_error(exc, spec, "starting"))
        finally:
            self._phases.leave(Phase.BRINGING_UP)

    async def _model_dirs(self) -> dict[str, Path] | None:
        refs = self._adapter.models()
        if not refs:
            return {}
        if self._store is None:
            raise refusals.no_model_store(self._name)
        local = await self._engine.run(self._store.find_local, refs)
        if (local is not None or not self._settings.allow_download) and self._lifecycle.current is State.FAILED:
            self._lifecycle.reset(message="retrying from the local cache")  # nothing to download: start over
        if local is not None:
            return local
        if not self._settings.allow_download:
            self._supervisor.fail(refusals.offline(self._name, refs))
            return None
        return await self._download(self._store, refs)

    async def _download(self, store: ModelStore, refs: tuple[ModelRef, ...]) -> dict[str, Path] | None:
        repos = ",".join(r.repo_id for r in refs)
        started = time.perf_counter()
        attributes = {"tts.backend": self._name, "tts.repo": repos, "tts.device": self._adapter.spec.device.value}
        with tracer().start_as_current_span("tts.download", attributes=attributes) as span:
            self._span = span
            try:
                if self._lifecycle.current is State.FAILED:
                    self._lifecycle.retry(message="downloading again")
                elif self._lifecycle.current is not State.DOWNLOADING:
                    self._lifecycle.start_download(message=", ".join(r.repo_id for r in refs))
                try:
                    dirs = await store.fetch(self._name, refs, self._progress_threadsafe)
                except BackendFailure as failure:
                    span.set_status(Status(StatusCode.ERROR, failure.message))
                    span.set_attribute("tts.outcome", failure.reason.value)
                    self._supervisor.fail(failure)
                    return None
                except asyncio.CancelledError:
                    span.set_attribute("tts.outcome", "cancelled")
                    raise
                progress = self._lifecycle.progress
                span.set_attribute("tts.outcome", "ok")
                self._lifecycle.finish_download(total=(progress.total or progress.done) if progress else 0)
            finally:
                progress = self._lifecycle.progress
                span.set_attribute("tts.bytes", progress.done if progress else 0)
                span.set_attribute("tts.duration_s", round(time.perf_counter() - started, 3))
                self._span = None
        return dirs

    async def _load(self, model_dirs: dict[str, Path]) -> None:
        spec = self._adapter.spec
        started = time.perf_counter()
        attributes = {
            "tts.backend": self._name,
            "tts.device": spec.device.value,
            "tts.repo": ",".join(r.repo_id for r in self._adapter.models()),
        }
        with tracer().start_as_current_span("tts.load", attributes=attributes) as span:
            self._span = span
            try:
                failure = await self._load_adapter(model_dirs)
                self.model_revision = snapshot_revision(model_dirs) if failure is None else None
                seconds = time.perf_counter() - started
                span.set_attribute("tts.duration_s", round(seconds, 3))
                if failure is not None:
                    span.set_status(Status(StatusCode.ERROR, failure.message))
                    span.set_attribute("tts.outcome", failure.reason.value)
                    self._supervisor.fail(failure)
                    return
                if not self._lifecycle.allowed(Trigger.FINISH_LOADING):  # moved meanwhile (shutdown, a failure)
                    span.set_attribute("tts.outcome", "discarded")
                    await self._engine.run(self._engine.release, f"loaded while {self._lifecycle.current.value}")
                    return
                span.set_attribute("tts.outcome", "ok")
                span.set_attribute("tts.load_seconds", seconds)
                self._supervisor.loaded()
                self._on_loaded()
                self._lifecycle.finish_loading(  # languages: what the fleet's routers may send here
                    message=f"loaded in {seconds:.2f} s",
                    detail={"load_seconds": round(seconds, 3), "languages": list(self._adapter.languages)},
                )
            finally:
                self._span = None
        metrics.LOAD_SECONDS.labels(self._name).observe(seconds)

    async def _load_adapter(self, model_dirs: dict[str, Path]) -> BackendFailure | None:
        """The adapter's blocking load, bounded by TTS_STARTUP_TIMEOUT_S; the failure it ended in, if any."""
        try:
            await asyncio.wait_for(self._engine.run(self._adapter.load, model_dirs), self._settings.startup_timeout_s)
        except TimeoutError:
            # the engine call cannot be interrupted: once it ends, drop what it loaded
            self._engine.release_later("load finished after its timeout")
            return refusals.load_timeout(self._name, self._settings.startup_timeout_s)
        except Exception as exc:
            return classify_load_error(exc, self._adapter.spec, "loading")
        return None

    def _progress_threadsafe(self, done: int, total: int | None) -> None:
        """Called from download threads; rate-limited to a few events a second."""
        now = time.monotonic()
        if (total is None or done < total) and now - self._last_progress_at < PROGRESS_EVERY_S:
            return
        self._last_progress_at = now
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._report_progress, done, total)
        except RuntimeError:  # the loop closed between the check and the call (shutdown)
            pass

    def _report_progress(self, done: int, total: int | None) -> None:
        if self._lifecycle.current is State.DOWNLOADING:
            self._lifecycle.report_progress(done, total)
