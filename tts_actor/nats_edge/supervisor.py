"""Keeps the embedded nats-server running: an unasked exit is logged, counted and restarted with backoff.

Without it a ``kill -9`` (or an OOM kill) of the child left a zombie and a service that could never reach
NATS again while its probes said ``alive``. The exit is learnt from the server's log thread, which reaps the
child (:class:`EmbeddedNatsServer`), never by polling; restarts keep the port, so the service's connection
(which reconnects forever) finds the server again. Attempts are bounded: a server that keeps dying is left
down, and ``/healthz`` then fails past TTS_HEALTH_NATS_GRACE_S, so an orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer, NatsServerError
from tts_actor.observability.logs import get_logger
from tts_actor.observability.metrics import EMBEDDED_NATS

log = get_logger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how fast: exponential backoff from ``initial_s``, capped at ``max_s``."""

    max_restarts: int = 5  # in a row; 0: never restart
    initial_s: float = 0.25
    max_s: float = 10.0
    stable_after_s: float = 60.0  # a server up this long has recovered: the count starts again

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2**attempt)


class EmbeddedSupervisor:
    """Starts the embedded server and restarts it when it exits unasked; ``stop()`` stops both."""

    def __init__(self, server: EmbeddedNatsServer, policy: RestartPolicy | None = None) -> None:
        self.server = server
        self.policy = policy or RestartPolicy()
        self.restarts = 0
        self._exited = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self._up_since = 0.0

    async def start(self) -> str:
        """Start the server (raises :class:`NatsServerError`), then watch it; returns its URL."""
        self._loop = asyncio.get_running_loop()
        self.server.on_exit = self._on_exit
        url = await asyncio.to_thread(self.server.start)
        self._up_since = time.monotonic()
        self._watch = asyncio.create_task(self._supervise(), name="embedded-nats-supervisor")
        return url

    def _on_exit(self, code: int) -> None:
        """On the server's log thread, once the child is reaped."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending anyway
            self._loop.call_soon_threadsafe(self._exited.set)

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            await self._exited.wait()
            self._exited.clear()
            up_s = time.monotonic() - self._up_since
            if up_s >= self.policy.stable_after_s:
                attempt = 0
            EMBEDDED_NATS.labels("exited").inc()
            log.error("embedded_nats_exited", exit_code=self.server.exit_code, up_s=round(up_s, 1), attempt=attempt)
            if not await self._restart(attempt):
                return
            attempt += 1

    async def _restart(self, attempt: int) -> bool:
        """Retry until the server is up or the attempts are spent; False when it is left down."""
        while attempt < self.policy.max_restarts:
            delay = self.policy.delay_s(attempt)
            await asyncio.sleep(delay)  # backoff: a crash loop must not spin
            started = time.monotonic()
            try:
                url = await asyncio.to_thread(self.server.start)
            except NatsServerError as exc:
                EMBEDDED_NATS.labels("restart_failed").inc()
                log.error("embedded_nats_restart_failed", attempt=attempt + 1, error=str(exc)[:500])
                attempt += 1
                continue
            self.restarts += 1
            self._up_since = time.monotonic()
            EMBEDDED_NATS.labels("restarted").inc()
            log.warning(
                "embedded_nats_restarted",
                url=url,
                attempt=attempt + 1,
                backoff_s=delay,
                start_ms=round((time.monotonic() - started) * 1000, 1),
                pid=self.server.pid,
            )
            return True
        EMBEDDED_NATS.labels("gave_up").inc()
        log.error(
            "embedded_nats_gave_up",
            restarts=self.policy.max_restarts,
            fix="see embedded_nats_restart_failed above; restart tts-actor, or set NATS_URL to a managed server",
        )
        return False

    async def stop(self) -> None:
        """Stop watching first (a stop is no crash), then the server."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.to_thread(self.server.stop)
