"""The OpenAI-compatible HTTP edge: Starlette on uvicorn, a client of the fleet over NATS.

It holds no engine: ``POST /v1/audio/speech`` becomes a ``tts.synthesize`` request
(same routing, limits and errors as the translator's), the audio goes back with
chunked transfer as it arrives, and a service error becomes an HTTP status with
OpenAI's error body. It can run beside the service (``serve --http``) or alone
(``tts-actor http``), on any host that reaches NATS. This module is the server's
lifecycle (bind, serve, drain); the routes are :mod:`.speech`, :mod:`.catalog` and :mod:`.custom_voices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

import uvicorn
from nats.aio.client import Client
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.http_edge.catalog import CatalogRoutes
from tts_actor.http_edge.custom_voices import CustomVoiceRoutes
from tts_actor.http_edge.edge_settings import EdgeSettings, check_exposure
from tts_actor.http_edge.guard import ConnectionLimits, guarded_protocol
from tts_actor.http_edge.middleware import BearerAuth, CutStreams, EdgeServer, http_error_json
from tts_actor.http_edge.speech import SpeechRoute
from tts_actor.observability.logs import get_logger
from tts_actor.wire.link import LinkState

log = get_logger(__name__)


class HttpEdge:
    """The Starlette app and its uvicorn server; ``start(nc)`` binds and serves, ``stop()`` drains."""

    def __init__(self, settings: Settings, edge: EdgeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
        check_exposure(host, edge)
        self.settings = settings
        self.edge = edge
        self.host = host
        self.port = port
        self.client: TtsClient | None = None
        self._server: EdgeServer | None = None
        self._link: LinkState | None = None
        self._task: asyncio.Task[None] | None = None
        self._speech = SpeechRoute(edge, self._client)
        catalog = CatalogRoutes(settings, edge, self._client, lambda: self._link)
        custom = CustomVoiceRoutes(self._client)
        consent_path = "/v1/audio/voice_consents/{consent_id:str}"
        self.app = CutStreams(
            BearerAuth(
                Starlette(
                    routes=[
                        Route("/v1/audio/speech", self._speech.handle, methods=["POST"]),
                        Route("/v1/models", catalog.models, methods=["GET"]),
                        Route("/v1/models/{model:str}", catalog.model, methods=["GET"]),
                        Route("/v1/audio/voices", catalog.voices, methods=["GET"]),
                        Route("/v1/audio/voices", custom.create_voice, methods=["POST"]),
                        Route("/v1/audio/voices/{voice_id:str}", custom.delete_voice, methods=["DELETE"]),
                        Route("/v1/audio/voice_consents", custom.create_consent, methods=["POST"]),
                        Route("/v1/audio/voice_consents", custom.list_consents, methods=["GET"]),
                        Route(consent_path, custom.consent, methods=["GET"]),
                        Route(consent_path, custom.rename_consent, methods=["POST"]),
                        Route(consent_path, custom.delete_consent, methods=["DELETE"]),
                        Route("/healthz", catalog.healthz, methods=["GET"]),
                        Route("/readyz", catalog.readyz, methods=["GET"]),
                    ],
                    exception_handlers={HTTPException: http_error_json},
                ),
                edge.api_keys,
            )
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, nc: Client, link: LinkState | None = None) -> None:
        """Bind now (a busy port fails here, not later), then serve in a task of its own.

        ``link`` tells how long NATS has been gone: ``/healthz`` fails past TTS_HEALTH_NATS_GRACE_S.
        """
        self._link = link
        # no retries here: an HTTP caller gets 429/503 with Retry-After at once and decides (admission stays honest)
        self.client = TtsClient(  # with the link: nothing is written into a dead connection's buffer
            nc,
            self.settings.subject_prefix,
            timeout_s=self.settings.synthesis_timeout_s + 5,
            retry_policy=None,
            connection=link,
        )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,  # one structured line per request from the edge itself
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(self.settings.shutdown_grace_s) or 1,
            http=guarded_protocol(
                ConnectionLimits(self.edge.header_timeout_s, self.edge.body_timeout_s, self.edge.max_connections)
            ),
        )
        self._server = EdgeServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        log.info(
            "http_edge_serving",
            url=self.url,
            auth="bearer" if self.edge.api_keys else "off (loopback)",
            speech=f"{self.url}/v1/audio/speech",
        )

    async def stop(self) -> None:
        """Stop accepting, let running responses finish within the grace period."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._speech.background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)

    def _client(self) -> TtsClient:
        assert self.client is not None, "HttpEdge.start() first"
        return self.client


async def run_http_edge(settings: Settings, edge: HttpEdge, nats_url: str) -> None:
    """``tts-actor http``: the edge alone, connected to the fleet's NATS, until SIGINT/SIGTERM."""
    from tts_actor.nats_edge.auth import connect_options
    from tts_actor.nats_edge.connection import connect

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    link = LinkState()
    nc = await connect(
        nats_url,
        f"tts-actor http {settings.instance}",
        deadline_s=settings.nats_connect_timeout_s,
        auth=connect_options(settings),
        watch=link,
    )
    try:
        await edge.start(nc, link)
        await stop.wait()
        log.info("shutting_down")
    finally:
        await edge.stop()
        await nc.drain()
