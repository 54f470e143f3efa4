"""Wiring: settings -> embedded NATS (if needed) -> registry -> service, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import nats.errors
from nats.aio.client import Client

from statemachine import State, StateEvent
from tts_actor.backends import BackendAdapter
from tts_actor.client import TtsClient
from tts_actor.config import Settings
from tts_actor.http_probes import ProbeServer
from tts_actor.logs import get_logger
from tts_actor.messages import SynthesisRequest
from tts_actor.models import ModelManager
from tts_actor.nats_server import EmbeddedNatsServer
from tts_actor.publisher import StatePublisher
from tts_actor.registry import Registry
from tts_actor.service import TtsService

if TYPE_CHECKING:
    from tts_actor.http_edge import HttpEdge

log = get_logger(__name__)
EMBEDDED_MAX_PAYLOAD = 8 * 1024 * 1024
SAMPLE_SENTENCE = "Hello! This is the T T S actor speaking, with the Piper voice, over NATS."


class NatsUnreachable(ConnectionError):
    """The first connection to NATS did not succeed within its bound."""


async def connect(
    url: str,
    name: str,
    reconnect: bool = True,
    deadline_s: float = 10.0,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect within ``deadline_s``; once connected, a long-lived connection reconnects forever.

    nats-py retries the first connection ``max_reconnect_attempts`` times (about 120 s by
    default) before giving up: the very hang this service exists to remove, so the first
    connection gets its own deadline.
    """

    async def on_error(exc: Exception) -> None:
        log.debug("nats_error", error=repr(exc))

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # our own shutdown is no news
            log.warning("nats_disconnected")

    async def reconnected() -> None:
        log.info("nats_reconnected")
        if on_reconnected is not None:
            await on_reconnected()

    nc = Client()
    options: dict[str, object] = dict(
        servers=[url], name=name, connect_timeout=min(5.0, deadline_s), error_cb=on_error, reconnect_time_wait=0.5
    )
    if reconnect:
        options.update(max_reconnect_attempts=-1, disconnected_cb=on_disconnected, reconnected_cb=reconnected)
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=1)
    try:
        await asyncio.wait_for(nc.connect(**options), deadline_s)  # type: ignore[arg-type]
    except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
        await nc.close()
        raise NatsUnreachable(f"NATS at {url} did not accept a connection within {deadline_s} s ({exc!r})") from None
    return nc


@dataclass
class TtsApp:
    """One running instance: owns the connection, the actors and the endpoints."""

    settings: Settings
    # adapters by name instead of the built-in ones for settings.backends (tests inject small ones)
    adapters: dict[str, BackendAdapter] | None = None
    store: ModelManager | None = None
    embedded: EmbeddedNatsServer | None = None
    nc: Client | None = None
    registry: Registry | None = None
    service: TtsService | None = None
    publisher: StatePublisher | None = None
    probes: ProbeServer | None = None
    started_at: float = field(default_factory=time.perf_counter)

    async def start(self) -> None:
        s = self.settings
        self.publisher = StatePublisher(s)
        self.store = self.store or ModelManager(s)
        self.registry = Registry(s, self.store, self._on_event, adapters=self.adapters)
        # the probes run now, before NATS is even up: events queue until published
        await self.registry.start()
        url = s.nats_url
        if url is None:
            # room for the largest request we accept (reference audio travels base64 in it) and big replies
            self.embedded = EmbeddedNatsServer(
                s.cache_dir / "nats", port=s.embedded_nats_port, max_payload=EMBEDDED_MAX_PAYLOAD
            )
            url = await asyncio.to_thread(self.embedded.start)
        self.nc = await connect(
            url,
            f"tts-actor {s.instance}",
            deadline_s=s.nats_connect_timeout_s,
            on_reconnected=self.publisher.on_reconnected,
        )
        await self.publisher.start(self.nc)
        self.service = TtsService(self.nc, self.registry, s)
        await self.service.start()
        if s.metrics_port:
            try:
                self.probes = ProbeServer(s.metrics_port, self.registry.health, asyncio.get_running_loop()).start()
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
        if self.probes is not None:  # first, so /readyz stops routing traffic here
            await asyncio.to_thread(self.probes.stop)
        if self.service is not None:
            await self.service.stop()
        if self.publisher is not None:  # before the engines: the KV forgets us even if they are slow to stop
            await self.publisher.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self.store is not None:
            await self.store.close()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

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
        client = TtsClient(self.nc, self.settings.subject_prefix)
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


async def serve(settings: Settings, sample_out: Path | None = None, http_edge: HttpEdge | None = None) -> None:
    """Run until SIGINT/SIGTERM; with ``http_edge``, the OpenAI-compatible HTTP edge too, on the same connection."""
    app = TtsApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        if http_edge is not None:
            assert app.nc is not None
            await http_edge.start(app.nc)
        sample = asyncio.create_task(app.speak_sample(sample_out)) if sample_out is not None else None
        if sample is not None:
            sample.add_done_callback(_log_sample_failure)
        await stop.wait()
        log.info("shutting_down")
        if sample is not None:
            sample.cancel()
    finally:
        if http_edge is not None:  # first: no new HTTP request reaches a stopping service
            await http_edge.stop()
        await app.stop()


def _log_sample_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("sample_failed", error=repr(exc), fix=getattr(exc, "fix", "see the error"))
