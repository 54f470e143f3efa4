"""One HTTP port for orchestrators: ``/metrics``, ``/healthz`` and ``/readyz``.

Kubernetes, systemd watchdogs and load balancers speak HTTP, not NATS. The
health snapshot is taken on the service's event loop (not on the HTTP thread),
so ``/healthz`` also proves the loop is responsive, and ``/readyz`` reads the
actors' states where they are owned. ``/healthz`` also fails once NATS has been
gone longer than TTS_HEALTH_NATS_GRACE_S: a process that cannot reach NATS serves
nobody, and saying ``alive`` would keep an orchestrator from restarting it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from tts_actor.observability.logs import get_logger
from tts_actor.wire.link import LinkState

log = get_logger(__name__)
HealthFn = Callable[[], dict[str, Any]]
LOOP_ANSWER_TIMEOUT_S = 2.0
PATHS = ("/metrics", "/healthz", "/readyz")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds would flood stderr
        return None


class ProbeServer:
    """Serves metrics and probes from a daemon thread; ``health`` runs on ``loop``."""

    def __init__(
        self,
        port: int,
        health: HealthFn,
        loop: asyncio.AbstractEventLoop,
        addr: str = "0.0.0.0",
        link: LinkState | None = None,
        nats_grace_s: float = 10.0,
    ) -> None:
        self._health = health
        self._loop = loop
        self._link = link
        self._nats_grace_s = nats_grace_s
        self._metrics_app = make_wsgi_app()
        self._server = make_server(addr, port, self._app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-probes", daemon=True)

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _snapshot(self) -> dict[str, Any] | None:
        """The health dict, computed on the event loop; None when the loop does not answer in time."""
        answer = asyncio.run_coroutine_threadsafe(_call(self._health), self._loop)
        try:
            return answer.result(LOOP_ANSWER_TIMEOUT_S)
        except Exception:
            answer.cancel()
            return None

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path not in ("/healthz", "/readyz"):
            return _json(start_response, "404 Not Found", {"error": "not found", "paths": list(PATHS)})
        health = self._snapshot()
        if health is None:
            return _json(start_response, "503 Service Unavailable", {"status": "event loop not answering"})
        if path == "/healthz":
            gone = self._link.verdict(self._nats_grace_s) if self._link is not None else None
            if gone is not None:
                return _json(start_response, "503 Service Unavailable", {**gone, "instance": health.get("instance")})
            return _json(start_response, "200 OK", {"status": "alive", "instance": health.get("instance")})
        ready = bool(health.get("ready"))
        return _json(start_response, "200 OK" if ready else "503 Service Unavailable", health)


async def _call(fn: HealthFn) -> dict[str, Any]:
    return fn()


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
