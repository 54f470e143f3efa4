"""The edge's read-only routes: the models and voices the fleet offers, and the health probes.

Each asks the fleet over NATS (status, voices, health) and answers in OpenAI's shapes, or,
for ``/healthz`` and ``/readyz``, in the shapes an orchestrator reads. Speech is :mod:`.speech`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.access_log import error_reply
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.http_edge.openai_compat import models_list, voices_list
from tts_actor.wire.link import LinkState


class CatalogRoutes:
    """``/v1/models``, ``/v1/models/{model}``, ``/v1/audio/voices``, ``/healthz`` and ``/readyz``.

    ``client`` and ``link`` are read per request: the edge has them only once it has started.
    """

    def __init__(
        self,
        settings: Settings,
        edge: EdgeSettings,
        client: Callable[[], TtsClient],
        link: Callable[[], LinkState | None],
    ) -> None:
        self.settings = settings
        self.edge = edge
        self._client = client
        self._link = link

    async def models(self, request: Request) -> Response:
        try:
            status = await self._client().status()
        except TtsError as error:
            return error_reply(error, request)
        return JSONResponse(models_list(status, self.edge))

    async def model(self, request: Request) -> Response:
        try:
            status = await self._client().status()
        except TtsError as error:
            return error_reply(error, request)
        wanted = request.path_params["model"]
        for entry in models_list(status, self.edge)["data"]:
            if entry["id"] == wanted:
                return JSONResponse(entry)
        error = TtsError(ErrorCode.UNKNOWN_BACKEND, f"no model {wanted!r}", "GET /v1/models lists them.")
        return error_reply(error, request)

    async def voices(self, request: Request) -> Response:
        try:
            voices = await self._client().voices()
        except TtsError as error:
            return error_reply(error, request)
        return JSONResponse(voices_list(voices, self.edge))

    async def healthz(self, request: Request) -> Response:
        """Liveness: this process answers, and NATS has not been gone past the grace; the fleet is /readyz's."""
        link = self._link()
        gone = link.verdict(self.settings.health_nats_grace_s) if link is not None else None
        if gone is not None:
            return JSONResponse(gone, 503)
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        """Ready when NATS is connected and the fleet says it can serve."""
        client = self._client()
        if not client.nc.is_connected:
            return JSONResponse({"ready": False, "nats": "disconnected"}, 503, headers={"Retry-After": "1"})
        try:
            health = await client.health()
        except TtsError as error:
            return JSONResponse({"ready": False, "nats": "connected", "error": error.to_dict()["error"]}, 503)
        ready = bool(health.get("ready"))
        return JSONResponse({"ready": ready, "nats": "connected", "fleet": health}, 200 if ready else 503)
