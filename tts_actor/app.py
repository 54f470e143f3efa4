"""Wiring: settings -> embedded NATS (if needed) -> registry -> service, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nats.aio.client import Client
from opentelemetry import trace

from statemachine import State, StateEvent
from tts_actor.backends import BackendAdapter
from tts_actor.backends.model_manager import ModelManager
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.fleet.publisher import StatePublisher
from tts_actor.http_edge.probes import ProbeServer
from tts_actor.lifecycle.registry import Registry
from tts_actor.nats_edge.auth import connect_options
from tts_actor.nats_edge.connection import connect
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.nats_edge.service import TtsService
from tts_actor.nats_edge.supervisor import EmbeddedSupervisor, RestartPolicy
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.wire.link import LinkState
from tts_actor.wire.messages import SynthesisRequest

if TYPE_CHECKING:
    from tts_actor.http_edge.app import HttpEdge

log = get_logger(__name__)
STEP_BOUND_S = 5.0  # each shutdown step beyond the grace: a dead connection cannot hold the exit longer
EMBEDDED_MAX_PAYLOAD = 8 * 1024 * 1024
SAMPLE_SENTENCE = "Hello! This is the T T S actor speaking, with the Piper voice, over NATS."


@dataclass
class TtsApp:
    """One running instance: owns the connection, the actors and the endpoints."""

    settings: Settings
    # adapters by name instead of the built-in ones for settings.backends (tests inject small ones)
    adapters: dict[str, BackendAdapter] | None = None
    store: ModelManager | None = None
    embedded: EmbeddedNatsServer | None = None
    supervisor: EmbeddedSupervisor | None = None
    link: LinkState = field(default_factory=LinkState)  # when NATS went away, for /healthz
    nc: Client | None = None
    registry: Registry | None = None
    service: TtsService | None = None
    publisher: StatePublisher | None = None
    probes: ProbeServer | None = None
    started_at: float = field(default_factory=time.perf_counter)

    async def start(self) -> None:
        s = self.settings
        self.publisher = StatePublisher(s)
        if s.nats_url is None:
            # room for the largest request we accept (reference audio travels base64 in it) and big replies
            self.embedded = EmbeddedNatsServer(
                s.cache_dir / "nats", port=s.embedded_nats_port, max_payload=EMBEDDED_MAX_PAYLOAD
            )
            self.embedded.check_port()  # a second instance stops here, before any store or engine is opened
        self.store = self.store or ModelManager(s)
        self.registry = Registry(s, self.store, self._on_event, adapters=self.adapters)
        # the probes run now, before NATS is even up: events queue until published
        await self.registry.start()
        url = s.nats_url
        if self.embedded is not None:
            self.supervisor = EmbeddedSupervisor(
                self.embedded, RestartPolicy(max_restarts=s.embedded_nats_max_restarts)
            )
            url = await self.supervisor.start()
        assert url is not None
        self.nc = await connect(
            url,
            f"tts-actor {s.instance}",
            deadline_s=s.nats_connect_timeout_s,
            on_reconnected=self.publisher.on_reconnected,
            auth=connect_options(s),
            watch=self.link,
        )
        metrics.NATS_CONNECTED.set_function(lambda: 1.0 if self.nc is not None and self.nc.is_connected else 0.0)
        await self.publisher.start(self.nc)
        self.service = TtsService(self.nc, self.registry, s)
        await self.service.start()
        if s.metrics_port:
            try:
                self.probes = ProbeServer(
                    s.metrics_port,
                    self.registry.health,
                    asyncio.get_running_loop(),
                    link=self.link,
                    nats_grace_s=s.health_nats_grace_s,
                ).start()
                log.info("metrics_serving", url=f"http://127.0.0.1:{s.metrics_port}/metrics", probes="/healthz /readyz")
            except OSError as exc:
                log.warning("metrics_port_busy", port=s.metrics_port, error=repr(exc))
        log.info(
            "ready",
            nats_url=url,
            instance=s.instance,
            startup_ms=round((time.perf_counter() - self.started_at) * 1000, 1),
        )

    def _on_event(self, event: StateEvent) -> None:
        assert self.publisher is not None
        self.publisher.enqueue(event)

    @property
    def url(self) -> str:
        assert self.nc is not None and self.nc.connected_url is not None
        return self.nc.connected_url.geturl()

    async def stop(self) -> None:
        """Every step runs, each bounded, whatever state the NATS connection is in; the embedded server last.

        Once this begins nothing new starts: queued jobs are answered ``shutting down`` at once, a running
        synthesis may finish within TTS_SHUTDOWN_GRACE_S (one grace for the whole shutdown, not one per step).
        """
        grace = self.settings.shutdown_grace_s
        deadline = time.monotonic() + grace
        if self.registry is not None:
            self.registry.begin_shutdown()
        if self.probes is not None:  # first, so /readyz stops routing traffic here
            await _bounded("probes", asyncio.to_thread(self.probes.stop), STEP_BOUND_S)
        if self.service is not None:
            await _bounded("service", self.service.stop(deadline), grace + STEP_BOUND_S)
        if self.publisher is not None:  # before the engines: the KV forgets us even if they are slow to stop
            await _bounded("state_publisher", self.publisher.stop(), 3 * STEP_BOUND_S)
        if self.registry is not None:
            await _bounded("backends", self.registry.stop(deadline), grace + STEP_BOUND_S)
        if self.store is not None:
            await _bounded("model_store", self.store.close(), STEP_BOUND_S)
        if self.nc is not None:
            await _bounded("nats_connection", _close_connection(self.nc), STEP_BOUND_S)
        if self.supervisor is not None:
            await _bounded("embedded_nats", self.supervisor.stop(), 2 * STEP_BOUND_S)
        elif self.embedded is not None:
            await _bounded("embedded_nats", asyncio.to_thread(self.embedded.stop), 2 * STEP_BOUND_S)
        log.info("stopped", engine_call_abandoned=self.engine_call_abandoned)

    @property
    def engine_call_abandoned(self) -> bool:
        """An engine call still runs on a worker thread after shutdown (it outlived the grace)."""
        return self.registry is not None and self.registry.engine_call_abandoned

    async def speak_sample(self, out: Path, timeout_s: float = 60.0) -> None:
        """Once Piper is loaded, speak one sentence through the service itself into ``out``."""
        assert self.registry is not None and self.nc is not None
        piper = self.registry.actors.get("piper")
        if piper is None:
            log.warning("sample_skipped", why="piper is not in TTS_BACKENDS")
            return
        state = await piper.wait_settled(timeout_s)
        if state is not State.LOADED:
            log.error("sample_skipped", why=f"piper is {state.value}", fix=piper.lifecycle.fix)
            return
        client = TtsClient(self.nc, self.settings.subject_prefix, connection=self.link)
        reply = await client.synthesize(SynthesisRequest(text=SAMPLE_SENTENCE))
        await asyncio.to_thread(out.write_bytes, reply.audio)
        log.info(
            "sample_written",
            path=str(out),
            backend=reply.backend,
            duration_ms=reply.duration_ms,
            bytes=len(reply.audio),
            more=f"tts-actor say 'Your text' -o out.wav   (NATS_URL={self.url})",
        )


async def serve(
    settings: Settings,
    sample_out: Path | None = None,
    http_edge: HttpEdge | None = None,
    adapters: dict[str, BackendAdapter] | None = None,
) -> bool:
    """Run until SIGINT/SIGTERM (also during start-up); whether an engine call was left running.

    With ``http_edge``, the OpenAI-compatible HTTP edge runs too, on the same connection.
    """
    app = TtsApp(settings, adapters=adapters)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sample: asyncio.Task[None] | None = None
    try:
        starting = asyncio.create_task(app.start())
        signalled = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # Ctrl-C while connecting or loading: stop now, not after the connect timeout
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            log.info("shutting_down", during="start-up")
            return app.engine_call_abandoned
        starting.result()  # a failed start raises here
        if http_edge is not None:
            assert app.nc is not None
            await http_edge.start(app.nc, app.link)
        if sample_out is not None:
            sample = asyncio.create_task(app.speak_sample(sample_out))
            sample.add_done_callback(_log_sample_failure)
        await signalled
        log.info("shutting_down")
        if sample is not None:
            sample.cancel()
    finally:
        if http_edge is not None:  # first: no new HTTP request reaches a stopping service
            await http_edge.stop()
        await app.stop()
    return app.engine_call_abandoned


def run_service(
    settings: Settings,
    sample_out: Path | None = None,
    adapters: dict[str, BackendAdapter] | None = None,
    http_edge: HttpEdge | None = None,
) -> int:
    """``tts-actor serve``: serve until a signal, then exit 0.

    An engine call that outlived the grace still runs native code on its thread; letting the interpreter
    finalize under it can abort the process (ONNX Runtime: ``terminate called without an active exception``,
    exit 134). Then the process leaves at once with ``os._exit`` once logs and traces are flushed.
    """
    abandoned = asyncio.run(serve(settings, sample_out, http_edge, adapters))
    if abandoned:
        log.warning("exiting_with_engine_call_running", fix="raise TTS_SHUTDOWN_GRACE_S to let long syntheses end")
        _flush_and_exit(0)
    return 0


def _flush_and_exit(code: int) -> NoReturn:
    with contextlib.suppress(Exception):
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush(2000)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def _bounded(step: str, awaitable: Awaitable[object], timeout_s: float) -> None:
    """One shutdown step: it may fail or time out, and the next step still runs."""
    try:
        await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        log.warning("shutdown_step_timed_out", step=step, timeout_s=timeout_s)
    except Exception as exc:
        log.warning("shutdown_step_failed", step=step, error=repr(exc))


async def _close_connection(nc: Client) -> None:
    """Drain when connected (replies in flight go out), else close; never raise on a broken connection."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await asyncio.wait_for(nc.drain(), STEP_BOUND_S / 2)
        except Exception as exc:
            log.debug("nats_drain_skipped", error=repr(exc))
    if not nc.is_closed:
        await nc.close()


def _log_sample_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("sample_failed", error=repr(exc), fix=getattr(exc, "fix", "see the error"))
