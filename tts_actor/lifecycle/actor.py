"""One actor per backend: the front its callers see, wiring the parts that do the work.

The actor owns the backend's :class:`BackendLifecycle` (what the backend is) and one
:class:`PhaseState` (what the actor is doing to it). The parts, each given only what it
needs: :class:`BringUp` (probe, fetch, load), :class:`Supervisor` (failures and backoff
retries), :class:`Unloader` (on request or idle), :class:`JobRunner` (the inbox, one
engine call per segment), all calling the engine on the backend's own worker thread(s) so a
slow backend never blocks another one or the NATS replies. Readers see the current state
synchronously; waiters are woken by transition events, never by a timer that re-checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from statemachine import BackendLifecycle, Reason, State, StateEvent
from tts_actor.backends.base import BackendAdapter, BackendFailure
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.lifecycle import refusals
from tts_actor.lifecycle.bring_up import BringUp, ModelStore, snapshot_revision
from tts_actor.lifecycle.engine import Engine
from tts_actor.lifecycle.idle import Unloader
from tts_actor.lifecycle.job_runner import ActorStats, JobRunner
from tts_actor.lifecycle.jobs import SynthesisJob
from tts_actor.lifecycle.memory_guard import MemoryGuard
from tts_actor.lifecycle.phase import Phase, PhaseState, is_pending, is_ready
from tts_actor.lifecycle.retry import RetryPolicy
from tts_actor.lifecycle.scheduling import PriorityInbox
from tts_actor.lifecycle.supervision import Supervisor
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger

__all__ = ["BackendActor", "ModelStore", "snapshot_revision"]

log = get_logger(__name__)


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
        self.log = log.bind(backend=adapter.name)
        self.lifecycle = BackendLifecycle(adapter.name, settings.instance)
        self.phases = PhaseState()
        self._on_event = on_event
        self._tasks: set[asyncio.Task[Any]] = set()
        # engines that allow it run several sessions, each on its own thread, taking jobs from the one inbox
        self.workers = settings.workers_for(adapter.name) if adapter.spec.parallel_sessions else 1
        self.engine = Engine(adapter, self.workers, self.log)
        inbox = PriorityInbox(adapter.name, settings.backend_queue_depth, settings.priority_ageing_s)
        policy = RetryPolicy.from_settings(settings)
        self.supervisor = Supervisor(self.lifecycle, self.phases, policy, self.bring_up, self.log)
        self.unloader = Unloader(self.lifecycle, self.phases, self.engine, settings, inbox.empty, self._spawn, self.log)
        self._bringup = BringUp(
            self.engine,
            settings,
            store,
            self.lifecycle,
            self.phases,
            self.supervisor,
            self.unloader.touch,
            self._spawn,
            self.log,
        )
        self.runner = JobRunner(
            self.engine,
            settings,
            self.lifecycle,
            self.phases,
            self.supervisor,
            inbox,
            self.unloader.touch,
            self.log,
            workers=self.workers,
        )
        self.memory_guard: MemoryGuard | None = None  # set by the registry when TTS_MAX_RSS_BYTES is on
        self.engine_call_abandoned = False  # set when stop() left an engine call running on its thread
        self.lifecycle.subscribe(self._handle_event)
        on_event(self.lifecycle.last_event)

    # --- reading -----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def state(self) -> State:
        return self.lifecycle.current

    @property
    def phase(self) -> Phase:
        return self.phases.phase

    @property
    def ready(self) -> bool:
        """Loaded, not being unloaded, not stuck: a request handed over now will be served."""
        return is_ready(self.state, self.phases.phase)

    @property
    def pending(self) -> bool:
        """True while the state may still change on its own (loading, downloading, unloading)."""
        return is_pending(self.state, self.phases.phase)

    @property
    def loads_on_demand(self) -> bool:
        """Unloaded on purpose (request or idle): the next request that wants it loads it again."""
        return (
            self.state is State.MISSING
            and not self.pending
            and self.lifecycle.reason in (Reason.UNLOAD_REQUESTED, Reason.IDLE_TIMEOUT)
        )

    @property
    def stopping(self) -> bool:
        return self.phases.stopping

    @property
    def busy(self) -> bool:
        """A synthesis is running on the worker: an unload now happens after it."""
        return self.phases.running > 0

    @property
    def queued(self) -> int:
        """Jobs waiting in the inbox (those partway through included)."""
        return self.runner.inbox.qsize()

    def retry_after_ms(self) -> int:
        """When a caller refused for this backend (full inbox, full service) should come back; takes a slot."""
        return self.runner.retry_after_ms()

    @property
    def stats(self) -> ActorStats:
        """This actor's own totals (engine and audio seconds, syntheses), for ``$SRV.STATS``."""
        return self.runner.stats

    @property
    def engine_calls(self) -> int:
        """Synthesize calls handed to the engine since start."""
        return self.runner.stats.engine_calls

    @property
    def model_revision(self) -> str | None:
        """The loaded snapshots (hub commits), for audio cache keys."""
        return self._bringup.model_revision

    def status(self) -> dict[str, Any]:
        lc = self.lifecycle
        spec = self.adapter.spec
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
            "queue": self.runner.inbox.qsize(),
            "priorities": self.runner.inbox.depths(),
            "rtf_recent": None if self.stats.recent_rtf is None else round(self.stats.recent_rtf, 4),
            "workers": self.workers,
            "waiting": self.phases.changes.waiting,
            "device": spec.device.value,
            "supports_cloning": spec.supports_cloning,
            "sample_rate": spec.sample_rate,
            "approx_memory_mb": spec.approx_memory_mb,
            "install": spec.install_fix,
        }

    def not_ready_error(self) -> TtsError:
        """The structured reply for a request this backend cannot serve now."""
        return refusals.not_ready(self.name, self.lifecycle.last_event, self.phases.phase)

    def shutting_down_error(self) -> TtsError:
        return refusals.shutting_down(self.name, self.state)

    # --- running -----------------------------------------------------------
    async def start(self) -> None:
        """Start the inbox runners and bring the backend up in the background."""
        loop = asyncio.get_running_loop()
        self.supervisor.loop = self.unloader.loop = self._bringup.loop = loop
        for _ in range(self.workers):
            self._spawn(self.runner.serve())
        self.bring_up()

    def bring_up(self) -> None:
        """Probe, fetch and load, in a background task; a no-op while anything else is under way."""
        self._bringup.start()

    def demand(self) -> None:
        """A request wants this backend: reload it if it was unloaded on purpose."""
        if self.loads_on_demand:
            self.log.info("loading_on_demand")
            self.bring_up()

    def retry(self) -> None:
        """Bring a failed or unloaded backend up again, now; a fresh start of the backoff too."""
        if self.state in (State.FAILED, State.MISSING) and self.phases.phase is Phase.IDLE:
            self.supervisor.restart()
            self.bring_up()

    def fail(self, failure: BackendFailure) -> None:
        """Record ``failure`` in the FSM (retried on its own if time can heal it)."""
        self.supervisor.fail(failure)

    def begin_shutdown(self) -> None:
        """Nothing new starts from now on: no load, no retry, no queued job; those queued are answered now."""
        self.phases.enter(Phase.STOPPING)
        self.supervisor.cancel()
        self.unloader.disarm()
        self.runner.refuse_queued(self.shutting_down_error(), started_too=False)  # begun ones may finish

    async def stop(self, deadline: float | None = None) -> None:
        """Cancel the actor's tasks and let a running engine call end until ``deadline`` (monotonic)."""
        self.begin_shutdown()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.runner.refuse_queued(self.shutting_down_error())
        self.engine.close()
        # let a running engine call end (a process exiting under native code can abort), within a bound:
        # a call that hangs for good is left behind on its daemon thread instead of holding up the exit
        grace = self.settings.shutdown_grace_s
        remaining = grace if deadline is None else max(0.0, deadline - time.monotonic())
        if not await self.engine.join(remaining):
            self.engine_call_abandoned = True
            self.log.warning("engine_call_abandoned", waited_s=round(remaining, 3), grace_s=grace)

    def request_unload(self, reason: Reason = Reason.UNLOAD_REQUESTED) -> asyncio.Task[bool] | None:
        """Start an unload in the background; None when it is refused now (see :meth:`unload`).

        From this call on the backend takes no new request (``ready`` is false), so a caller can be told at once,
        even while a synthesis runs that the unload must wait for.
        """
        return self.unloader.request(reason)

    async def unload(self, reason: Reason = Reason.UNLOAD_REQUESTED) -> bool:
        """Free the model (``loaded``, or ``failed`` after out of memory) and go to ``missing``."""
        return self.unloader.accept(reason) and await self.unloader.run(reason)

    def submit(self, job: SynthesisJob) -> None:
        """Queue a synthesis; raises ``busy`` at once when the inbox is full."""
        if self.stopping:
            raise self.shutting_down_error()
        if not self.ready:
            raise self.not_ready_error()
        if self.memory_guard is not None and (refusal := self.memory_guard.refusal(self)) is not None:
            raise refusal
        self.runner.put(job)
        self.unloader.touch()

    # --- changes -----------------------------------------------------------
    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the loop) after each change that may alter :attr:`ready`."""
        self.phases.changes.subscribe(listener)

    async def wait_settled(self, timeout_s: float) -> State:
        """Wait, on transition events, until nothing is pending or ``timeout_s`` passes."""
        await self.phases.changes.wait_while(lambda: self.pending, timeout_s)
        return self.state

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
        self._bringup.record(event)
        if event.to_state is State.LOADED and event.from_state is not State.LOADED:
            self.unloader.arm()
        elif event.to_state is not State.LOADED:
            self.unloader.disarm()
        self._on_event(event)
        self.phases.changes.wake()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
