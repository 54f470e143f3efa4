"""One actor per backend: an asyncio task with its own inbox and worker thread.

The actor owns the backend's :class:`BackendLifecycle`. Bring-up (package probe,
model fetch, load) and synthesis run on the backend's own single worker thread,
so a slow backend never blocks another one or the NATS replies. Readers see the
current state synchronously; waiters are woken by transition events, never by a
timer that re-checks.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.trace import Span, Status, StatusCode

from statemachine import BackendLifecycle, Reason, State, StateEvent, Trigger
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import (
    BackendAdapter,
    BackendFailure,
    ModelRef,
    classify_load_error,
    license_refusal,
    missing_packages,
)
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.jobs import SynthesisJob
from tts_actor.lifecycle.retry import RetryPolicy
from tts_actor.lifecycle.worker import DaemonWorker
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import tracer

log = get_logger(__name__)

SINK_BOUND_S = 5.0  # a sink that does not take a segment in this long is not waited for (the caller gave up)
ProgressCallback = Callable[[int, "int | None"], None]


class ModelStore(Protocol):
    """Where model files come from: the local cache first, then a bounded download."""

    def find_local(self, refs: tuple[ModelRef, ...]) -> dict[str, Path] | None: ...

    async def fetch(
        self, backend: str, refs: tuple[ModelRef, ...], on_progress: ProgressCallback
    ) -> dict[str, Path]: ...


class BackendActor:
    """Runs one backend; see the module docstring."""

    def __init__(
        self,
        adapter: BackendAdapter,
        settings: Settings,
        store: ModelStore | None,
        on_event: Callable[[StateEvent], None],
    ) -> None:
        self.adapter = adapter
        self.settings = settings
        self.store = store
        self._on_event = on_event
        self.lifecycle = BackendLifecycle(adapter.name, settings.instance)
        self.lifecycle.subscribe(self._handle_event)
        self._inbox: asyncio.Queue[SynthesisJob] = asyncio.Queue(maxsize=settings.backend_queue_depth)
        # engines that allow it run several sessions, each on its own thread, taking jobs from the one inbox
        self.workers = settings.workers_for(adapter.name) if adapter.spec.parallel_sessions else 1
        self._executor = DaemonWorker(f"tts-{adapter.name}", self.workers)
        self._waiters: list[asyncio.Future[None]] = []
        self._listeners: list[Callable[[], None]] = []  # told of each change that may alter ``ready``
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bringing_up = False
        self._last_used = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_progress_at = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._unloading = False
        self._running = 0  # syntheses running on the workers
        self._stuck = False  # the worker is still inside a synthesis that timed out
        self._retry_policy = RetryPolicy.from_settings(settings)
        self._retry_attempt = 0
        self._retry_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self.engine_call_abandoned = False  # set when stop() left an engine call running on its thread
        self._span: Span | None = None  # the download or load span that state events are recorded on
        self.model_revision: str | None = None  # the loaded snapshots (hub commits), for audio cache keys
        self.engine_calls = 0  # synthesize calls handed to the engine since start
        self.log = log.bind(backend=adapter.name)
        on_event(self.lifecycle.last_event)

    # --- reading -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def state(self) -> State:
        return self.lifecycle.current

    @property
    def ready(self) -> bool:
        """Loaded, not being unloaded, not stuck: a request handed over now will be served."""
        return self.state is State.LOADED and not self._unloading and not self._stuck

    @property
    def loads_on_demand(self) -> bool:
        """Unloaded on purpose (request or idle): the next request that wants it loads it again."""
        return (
            self.state is State.MISSING
            and not self.pending
            and self.lifecycle.reason in (Reason.UNLOAD_REQUESTED, Reason.IDLE_TIMEOUT)
        )

    def demand(self) -> None:
        """A request wants this backend: reload it if it was unloaded on purpose."""
        if self.loads_on_demand:
            self.log.info("loading_on_demand")
            self.bring_up()

    @property
    def pending(self) -> bool:
        """True while the state may still change on its own (loading, downloading, unloading)."""
        return self._bringing_up or self._unloading or self.state is State.DOWNLOADING

    def status(self) -> dict[str, Any]:
        lc = self.lifecycle
        return {
            "name": self.name,
            "state": lc.current.value,
            "reason": lc.reason.value,
            "fix": lc.fix,
            "message": lc.message,
            "languages": list(self.adapter.languages),
            "voices": [v.id for v in self.adapter.voices()],
            "progress": {"done": lc.progress.done, "total": lc.progress.total} if lc.progress else None,
            "since": lc.since,
            "seq": lc.last_event.seq,
            "queue": self._inbox.qsize(),
            "workers": self.workers,
            "waiting": sum(not w.done() for w in self._waiters),
            "device": self.adapter.spec.device.value,
            "supports_cloning": self.adapter.spec.supports_cloning,
            "sample_rate": self.adapter.spec.sample_rate,
            "approx_memory_mb": self.adapter.spec.approx_memory_mb,
            "install": self.adapter.spec.install_fix,
        }

    def not_ready_error(self) -> TtsError:
        """The structured reply for a request this backend cannot serve now."""
        lc = self.lifecycle
        if lc.current is State.FAILED:
            return TtsError(
                ErrorCode.BACKEND_FAILED,
                f"backend {self.name} is failed ({lc.reason.value}): {lc.message}",
                lc.fix or f"tts-actor retry {self.name}",
                backend=self.name,
                state=lc.current.value,
                reason=lc.reason.value,
            )
        if self._stuck and lc.current is State.LOADED:
            return TtsError(
                ErrorCode.BUSY,
                f"backend {self.name} is still finishing a synthesis that went over TTS_SYNTHESIS_TIMEOUT_S",
                "Retry after retry_after_ms or pick another backend; an engine call that never returns "
                "needs this instance restarted.",
                backend=self.name,
                state=lc.current.value,
                retry_after_ms=1000,
            )
        retry_after = 1000
        if self._unloading:
            verb = "unloading; it loads again on demand"
        elif lc.current is State.DOWNLOADING:
            verb = "downloading"
        else:
            verb = "loading" if self.pending else "not loaded"
        return TtsError(
            ErrorCode.BACKEND_NOT_READY,
            f"backend {self.name} is {lc.current.value} ({verb})",
            "Retry after retry_after_ms, send wait_ms to wait for it, or pick another backend"
            if self.pending
            else f"Load it with `tts-actor retry {self.name}`.",
            backend=self.name,
            state=lc.current.value,
            reason=lc.reason.value,
            retry_after_ms=retry_after,
        )

    # --- running -----------------------------------------------------------
    async def start(self) -> None:
        """Start the inbox and bring the backend up in the background."""
        self._loop = asyncio.get_running_loop()
        for _ in range(self.workers):
            self._spawn(self._serve_inbox())
        self.bring_up()

    def bring_up(self) -> None:
        """Probe, fetch and load, in a background task; a no-op while one runs."""
        if self._bringing_up or self._stopping:
            return
        self._bringing_up = True
        self._spawn(self._bring_up())

    def begin_shutdown(self) -> None:
        """Nothing new starts from now on: no load, no retry, no queued job; those queued are answered now."""
        self._stopping = True
        self._cancel_retry_timer()
        self._disarm_idle_timer()
        self._refuse_queued(self.shutting_down_error())
        self._wake()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self, deadline: float | None = None) -> None:
        """Cancel the actor's tasks and let a running engine call end until ``deadline`` (monotonic)."""
        self.begin_shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._refuse_queued(self.shutting_down_error())
        self._executor.shutdown(wait=False, cancel_futures=True)
        # let a running engine call end (a process exiting under native code can abort), within a bound:
        # a call that hangs for good is left behind on its daemon thread instead of holding up the exit
        grace = self.settings.shutdown_grace_s
        remaining = grace if deadline is None else max(0.0, deadline - time.monotonic())
        if not await asyncio.to_thread(self._executor.join, remaining):
            self.engine_call_abandoned = True
            self.log.warning("engine_call_abandoned", waited_s=round(remaining, 3), grace_s=grace)

    def shutting_down_error(self) -> TtsError:
        return TtsError(
            ErrorCode.BACKEND_NOT_READY,
            f"{self.name} is shutting down",
            "Retry on another instance.",
            backend=self.name,
            state=self.state.value,
            retry_after_ms=1000,
        )

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _bring_up(self) -> None:
        spec = self.adapter.spec
        try:
            refusal = license_refusal(spec, self.settings.accepted_licenses)
            missing = missing_packages(spec.packages)
            if self.state is State.FAILED and (refusal or missing or not self.adapter.models()):
                # nothing to download: start over from missing (a download retry goes failed → downloading)
                self.lifecycle.reset(message="retrying")
            if missing:
                self._fail(
                    BackendFailure(
                        Reason.PACKAGE_MISSING,
                        f"{self.name}: Python package(s) {', '.join(missing)} not installed",
                        spec.install_fix,
                        {"missing": missing},
                    )
                )
                return
            if refusal:  # before any download: no weights are fetched under terms nobody accepted
                self._fail(refusal)
                return
            model_dirs = await self._model_dirs()
            if model_dirs is None:
                return
            await self._load(model_dirs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in an adapter still ends in a named state
            self.log.exception("bring_up_crashed")
            self._fail(classify_load_error(exc, spec, "starting"))
        finally:
            self._bringing_up = False
            self._wake()

    async def _model_dirs(self) -> dict[str, Path] | None:
        refs = self.adapter.models()
        if not refs:
            return {}
        if self.store is None:
            raise BackendFailure(Reason.DOWNLOAD_FAILED, f"{self.name}: no model store configured", "internal")
        local = await self._run(self.store.find_local, refs)
        if (local is not None or not self.settings.allow_download) and self.state is State.FAILED:
            self.lifecycle.reset(message="retrying from the local cache")  # nothing to download: start over
        if local is not None:
            return local
        if not self.settings.allow_download:
            self._fail(
                BackendFailure(
                    Reason.OFFLINE,
                    f"{self.name}: model {', '.join(r.repo_id for r in refs)} is not cached and downloads are off "
                    "(HF_HUB_OFFLINE=1 or TTS_ALLOW_DOWNLOAD=0)",
                    f"Run `tts-actor fetch {self.name}` on a host with network access (same TTS_CACHE_DIR), "
                    "or unset HF_HUB_OFFLINE / set TTS_ALLOW_DOWNLOAD=1.",
                )
            )
            return None
        repos = ",".join(r.repo_id for r in refs)
        started = time.perf_counter()
        with tracer().start_as_current_span(
            "tts.download",
            attributes={"tts.backend": self.name, "tts.repo": repos, "tts.device": self.adapter.spec.device.value},
        ) as span:
            self._span = span
            try:
                if self.state is State.FAILED:
                    self.lifecycle.retry(message="downloading again")
                elif self.state is not State.DOWNLOADING:
                    self.lifecycle.start_download(message=", ".join(r.repo_id for r in refs))
                try:
                    dirs = await self.store.fetch(self.name, refs, self._progress_threadsafe)
                except BackendFailure as failure:
                    span.set_status(Status(StatusCode.ERROR, failure.message))
                    span.set_attribute("tts.outcome", failure.reason.value)
                    self._fail(failure)
                    return None
                except asyncio.CancelledError:
                    span.set_attribute("tts.outcome", "cancelled")
                    raise
                progress = self.lifecycle.progress
                total = (progress.total or progress.done) if progress else 0
                span.set_attribute("tts.outcome", "ok")
                self.lifecycle.finish_download(total=total)
            finally:
                progress = self.lifecycle.progress
                span.set_attribute("tts.bytes", progress.done if progress else 0)
                span.set_attribute("tts.duration_s", round(time.perf_counter() - started, 3))
                self._span = None
        return dirs

    async def _load(self, model_dirs: dict[str, Path]) -> None:
        spec = self.adapter.spec
        started = time.perf_counter()
        with tracer().start_as_current_span(
            "tts.load",
            attributes={
                "tts.backend": self.name,
                "tts.device": spec.device.value,
                "tts.repo": ",".join(r.repo_id for r in self.adapter.models()),
            },
        ) as span:
            self._span = span
            try:
                failure = await self._load_adapter(model_dirs)
                self.model_revision = snapshot_revision(model_dirs) if failure is None else None
                seconds = time.perf_counter() - started
                span.set_attribute("tts.duration_s", round(seconds, 3))
                if failure is not None:
                    span.set_status(Status(StatusCode.ERROR, failure.message))
                    span.set_attribute("tts.outcome", failure.reason.value)
                    self._fail(failure)
                    return
                if not self.lifecycle.allowed(Trigger.FINISH_LOADING):  # moved meanwhile (shutdown, a failure)
                    span.set_attribute("tts.outcome", "discarded")
                    await self._run(self._release_after_failure, f"loaded while {self.state.value}")
                    return
                span.set_attribute("tts.outcome", "ok")
                span.set_attribute("tts.load_seconds", seconds)
                self._retry_attempt = 0
                self._last_used = time.monotonic()
                self.lifecycle.finish_loading(  # languages: what the fleet's routers may send here
                    message=f"loaded in {seconds:.2f} s",
                    detail={"load_seconds": round(seconds, 3), "languages": list(self.adapter.languages)},
                )
            finally:
                self._span = None
        metrics.LOAD_SECONDS.labels(self.name).observe(seconds)

    async def _load_adapter(self, model_dirs: dict[str, Path]) -> BackendFailure | None:
        """The adapter's blocking load, bounded by TTS_STARTUP_TIMEOUT_S; the failure it ended in, if any."""
        try:
            await asyncio.wait_for(self._run(self.adapter.load, model_dirs), self.settings.startup_timeout_s)
        except TimeoutError:
            # the engine call cannot be interrupted: once it ends, drop what it loaded
            self._executor.submit(self._release_after_failure, "load finished after its timeout")
            return BackendFailure(
                Reason.LOAD_ERROR,
                f"{self.name}: load did not finish within TTS_STARTUP_TIMEOUT_S={self.settings.startup_timeout_s}",
                "Raise TTS_STARTUP_TIMEOUT_S on slow hosts, or check `tts-actor doctor`.",
            )
        except Exception as exc:
            return classify_load_error(exc, self.adapter.spec, "loading")
        return None

    def _fail(self, failure: BackendFailure) -> None:
        if not self.lifecycle.allowed(Trigger.FAIL):  # already failed: keep the first, named cause
            self.log.warning("failure_while_failed", reason=failure.reason.value, message=failure.message)
            return
        detail = dict(failure.detail)
        delay = self._next_retry_delay(failure.reason)
        if delay is not None:
            detail.update(retry_in_s=delay, retry_attempt=self._retry_attempt)
        self.log.warning(
            "backend_failed", reason=failure.reason.value, message=failure.message, fix=failure.fix, retry_in_s=delay
        )
        self.lifecycle.fail(failure.reason, failure.fix, failure.message, detail=detail)
        if delay is not None and self._loop is not None:
            self._cancel_retry_timer()
            self._retry_timer = self._loop.call_later(delay, self._on_retry_timer)

    def _next_retry_delay(self, reason: Reason) -> float | None:
        """Backoff before the next automatic attempt, counting it; None when this failure is not retried."""
        if self._stopping or not self._retry_policy.retries(reason):
            return None
        delay = self._retry_policy.delay(self._retry_attempt + 1)
        if delay is None:
            if self._retry_attempt:
                self.log.warning("retries_exhausted", attempts=self._retry_attempt, fix=f"tts-actor retry {self.name}")
            return None
        self._retry_attempt += 1
        return delay

    def _on_retry_timer(self) -> None:
        self._retry_timer = None
        if self.state is State.FAILED and not self._bringing_up and not self._stopping:
            self.log.info("retrying", attempt=self._retry_attempt)
            self.bring_up()

    def _cancel_retry_timer(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None

    def _progress_threadsafe(self, done: int, total: int | None) -> None:
        """Called from download threads; rate-limited to a few events a second."""
        now = time.monotonic()
        if total is None or done < total:
            if now - self._last_progress_at < 0.25:
                return
        self._last_progress_at = now
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._report_progress, done, total)
        except RuntimeError:  # the loop closed between the check and the call (shutdown)
            pass

    def _report_progress(self, done: int, total: int | None) -> None:
        if self.state is State.DOWNLOADING:
            self.lifecycle.report_progress(done, total)

    def _handle_event(self, event: StateEvent) -> None:
        metrics.record_state(event)
        if event.reason is not Reason.DOWNLOAD_PROGRESS:
            self.log.info(
                "state_changed",
                from_state=event.from_state.value if event.from_state else None,
                to_state=event.to_state.value,
                reason=event.reason.value,
                seq=event.seq,
                fix=event.fix,
            )
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
        if event.to_state is State.LOADED and event.from_state is not State.LOADED:
            self._arm_idle_timer()
        elif event.to_state is not State.LOADED:
            self._disarm_idle_timer()
        self._on_event(event)
        self._wake()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the loop) after each change that may alter :attr:`ready`."""
        self._listeners.append(listener)

    def _wake(self) -> None:
        for listener in self._listeners:
            listener()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_settled(self, timeout_s: float) -> State:
        """Wait, on transition events, until nothing is pending or ``timeout_s`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                break
        return self.state

    # --- control -----------------------------------------------------------
    def retry(self) -> None:
        """Bring a failed or unloaded backend up again, now; a fresh start of the backoff too."""
        if self.state in (State.FAILED, State.MISSING) and not self._bringing_up:
            self._cancel_retry_timer()
            self._retry_attempt = 0
            self.bring_up()

    @property
    def busy(self) -> bool:
        """A synthesis is running on the worker: an unload now happens after it."""
        return self._running > 0

    def request_unload(self, reason: Reason = Reason.UNLOAD_REQUESTED) -> asyncio.Task[bool] | None:
        """Start an unload in the background; None when it is refused now (see :meth:`unload`).

        From this call on the backend takes no new request (``ready`` is false), so a caller can be told at once,
        even while a synthesis runs that the unload must wait for.
        """
        if not self._accept_unload(reason):
            return None
        return self._spawn(self._unload_accepted(reason))

    async def unload(self, reason: Reason = Reason.UNLOAD_REQUESTED) -> bool:
        """Free the model (``loaded``, or ``failed`` after out of memory) and go to ``missing``."""
        if not self._accept_unload(reason):
            return False
        return await self._unload_accepted(reason)

    def _accept_unload(self, reason: Reason) -> bool:
        if self._unloading or self._bringing_up or self._stopping or not self.lifecycle.allowed(Trigger.UNLOAD):
            return False
        if self._stuck:  # the engine is inside a call that cannot be interrupted: unload would queue behind it
            self.log.warning("unload_refused_while_stuck", reason=reason.value)
            return False
        self._unloading = True
        self._wake()  # not ready from now on: routing stops sending requests here
        return True

    async def _unload_accepted(self, reason: Reason) -> bool:
        try:
            await self._run(self.adapter.unload)
        except Exception as exc:  # the engine would not let go: stay as we are, say so, try again later
            self.log.warning("unload_failed", reason=reason.value, error=repr(exc))
            if self.state is State.LOADED:
                self._arm_idle_timer()
            return False
        finally:
            self._unloading = False
            self._wake()
        if not self.lifecycle.allowed(Trigger.UNLOAD):  # the state moved while the engine let go
            return False
        self.lifecycle.unload(reason)
        return True

    def _arm_idle_timer(self) -> None:
        """Unload after TTS_IDLE_UNLOAD_S without requests: armed on entering ``loaded``."""
        if self._loop is None or self.settings.idle_unload_s <= 0 or self._stopping:
            return
        self._disarm_idle_timer()
        delay = max(self._last_used + self.settings.idle_unload_s - time.monotonic(), 0.0)
        self._idle_timer = self._loop.call_later(delay or self.settings.idle_unload_s, self._on_idle_timer)

    def _disarm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        if self.state is not State.LOADED:
            return  # re-armed when it is loaded again
        idle_for = time.monotonic() - self._last_used
        if idle_for < self.settings.idle_unload_s or self.busy or not self._inbox.empty():
            self._arm_idle_timer()  # used since: wait out the rest (a finished job refreshes last use)
            return
        self.request_unload(Reason.IDLE_TIMEOUT)

    # --- synthesis ---------------------------------------------------------
    def submit(self, job: SynthesisJob) -> None:
        """Queue a synthesis; raises ``busy`` at once when the inbox is full."""
        if self._stopping:
            raise self.shutting_down_error()
        if not self.ready:
            raise self.not_ready_error()
        try:
            self._inbox.put_nowait(job)
        except asyncio.QueueFull:
            raise TtsError(
                ErrorCode.BUSY,
                f"backend {self.name} has {self._inbox.qsize()} requests queued (TTS_BACKEND_QUEUE_DEPTH)",
                "Retry after retry_after_ms, or add instances (they share the queue group).",
                backend=self.name,
                state=self.state.value,
                retry_after_ms=500,
            ) from None
        self._last_used = time.monotonic()

    async def _serve_inbox(self) -> None:
        while True:
            job = await self._inbox.get()
            if job.future.done():  # cancelled while queued
                continue
            if (stop := job.control.stop_error(self.name)) is not None:  # its deadline passed in the queue
                _settle(job.future, stop)
                continue
            if self._stopping:  # shutdown began after it was queued: it does not start
                _settle(job.future, self.shutting_down_error())
                continue
            if not self.ready:  # unloaded or failed since it was queued
                _settle(job.future, self.not_ready_error())
                continue
            self._running += 1
            try:
                await self._serve_job(job)
            except Exception as exc:  # a bug here must not stop the inbox: answer, log, go on
                self.log.exception("synthesis_job_crashed")
                _settle(
                    job.future,
                    TtsError(
                        ErrorCode.INTERNAL, f"{self.name}: {type(exc).__name__}", "Report this with the service log."
                    ),
                )
            finally:
                self._running -= 1
                self._last_used = time.monotonic()

    async def _serve_job(self, job: SynthesisJob) -> None:
        """One engine call per segment, stopping between them on cancel or deadline; one timeout for all."""
        tracer().start_span("tts.queue_wait", context=job.trace_context, start_time=job.queued_ns).end()
        loop = asyncio.get_running_loop()
        timeout_at = loop.time() + self.settings.synthesis_timeout_s
        for segment in job.segments:
            if job.future.done():  # cancelled, or the caller's handler gave up
                return
            if (stop := job.control.stop_error(self.name)) is not None:
                _settle(job.future, stop)
                return
            attributes = {"tts.segment": segment.index, "tts.text_chars": len(segment.text)}
            with tracer().start_as_current_span(
                "tts.segment", context=job.trace_context, attributes=attributes
            ) as span:
                request = dataclasses.replace(job.request, text=segment.text)
                self.engine_calls += 1
                engine = asyncio.ensure_future(self._run(self.adapter.synthesize, request, job.voice))
                done, _ = await asyncio.wait({engine}, timeout=max(0.0, timeout_at - loop.time()))
                if not done:
                    span.set_status(Status(StatusCode.ERROR, "timeout"))
                    await self._abandon(job, engine)
                    return
                try:
                    audio = engine.result()
                    if not isinstance(audio, Audio):
                        raise TypeError(f"{self.name} returned {type(audio).__name__}, not Audio")
                except Exception as exc:  # the reply names it; the actor goes on serving
                    error = self._synthesis_error(exc)
                    span.set_status(Status(StatusCode.ERROR, error.message))
                    _settle(job.future, error)
                    return
                span.set_attribute("tts.audio_seconds", audio.duration_s)
            if not job.future.done():
                await _first_of(job.sink.accept(segment, audio), job.future, bound_s=SINK_BOUND_S)
        if not job.future.done():
            job.future.set_result(None)

    async def _abandon(self, job: SynthesisJob, engine: asyncio.Future[Any]) -> None:
        """Past TTS_SYNTHESIS_TIMEOUT_S: answer now, and keep the backend closed until the engine returns."""
        _settle(
            job.future,
            TtsError(
                ErrorCode.SYNTHESIS_TIMEOUT,
                f"{self.name} took over {self.settings.synthesis_timeout_s} s",
                "Send shorter text, or raise TTS_SYNTHESIS_TIMEOUT_S.",
                backend=self.name,
            ),
        )
        # the engine call cannot be interrupted and the worker is serial: until it returns this
        # backend takes nothing new (callers get `busy` at once, routing falls back) and what is
        # queued is answered now rather than left waiting behind it
        self._stuck = True
        self._wake()
        self._refuse_queued(self.not_ready_error())
        try:
            await asyncio.wait({engine})
        finally:
            self._stuck = False
        if not engine.cancelled():
            engine.exception()  # seen: an abandoned call's outcome is of no use to anyone
        self.log.info("abandoned_synthesis_returned")

    def _refuse_queued(self, error: TtsError) -> None:
        """Answer every job still in the inbox with ``error``."""
        while not self._inbox.empty():
            _settle(self._inbox.get_nowait().future, error)

    def _synthesis_error(self, exc: Exception) -> TtsError:
        if isinstance(exc, TtsError):
            return exc
        failure = classify_load_error(exc, self.adapter.spec, "synthesizing")
        if failure.reason is Reason.OUT_OF_MEMORY:
            self._fail(failure)  # routing falls back to the next backend from now on
            # free what the engine holds; the worker runs this before any retry's load
            self._executor.submit(self._release_after_failure, "out of memory")
            return TtsError(
                ErrorCode.OUT_OF_MEMORY,
                failure.message,
                failure.fix,
                backend=self.name,
                state=self.state.value,
                detail=dict(failure.detail),
            )
        self.log.warning("synthesis_failed", error=repr(exc))
        return TtsError(
            ErrorCode.SYNTHESIS_FAILED,
            f"{self.name}: {type(exc).__name__}: {str(exc)[:300]}",
            "Check the text and options; if it persists, see the service log for this backend.",
            backend=self.name,
            state=self.state.value,
        )

    def _release_after_failure(self, why: str) -> None:
        """On the worker thread: drop the engine's model after a failure, so nothing stays resident."""
        try:
            self.adapter.unload()
            self.log.info("model_released", why=why)
        except Exception as exc:  # already failed; the log says what else went wrong
            self.log.warning("model_release_failed", why=why, error=repr(exc))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking ``fn`` on this backend's own worker thread, in the caller's context (its span)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def snapshot_revision(model_dirs: dict[str, Path]) -> str | None:
    """``key=<snapshot dir>`` per model: the model manager's snapshot directories are named by hub commit."""
    if not model_dirs:
        return None
    return ",".join(f"{key}={path.name}" for key, path in sorted(model_dirs.items()))


async def _first_of(waiting: Any, future: asyncio.Future[Any], bound_s: float) -> None:
    """Wait for ``waiting``, or until ``future`` settles, or ``bound_s``, whichever comes first."""
    task = asyncio.ensure_future(waiting)
    try:
        await asyncio.wait({task, future}, timeout=bound_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()


def _settle(future: asyncio.Future[Any], error: TtsError) -> None:
    """Fail ``future`` unless it is settled already (a caller that gave up, a shutdown)."""
    if not future.done():
        future.set_exception(error)
