"""The OpenAI-compatible HTTP edge: Starlette on uvicorn, a client of the fleet over NATS.

It holds no engine: ``POST /v1/audio/speech`` becomes a ``tts.synthesize`` request
(same routing, limits and errors as the translator's), the audio goes back with
chunked transfer as it arrives, and a service error becomes an HTTP status with
OpenAI's error body. It can run beside the service (``serve --http``) or alone
(``tts-actor http``), on any host that reaches NATS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from nats.aio.client import Client
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.edge_settings import EdgeSettings, check_exposure
from tts_actor.http_edge.guard import ConnectionLimits, guarded_protocol
from tts_actor.http_edge.middleware import BearerAuth, CutStreams, EdgeServer, StreamCut, http_error_json
from tts_actor.http_edge.openai_compat import (
    CONTENT_TYPES,
    SpeechCall,
    error_response,
    map_speech_request,
    models_list,
    voice_languages,
    voices_list,
)
from tts_actor.nats_edge.link import LinkWatch
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import extract_context, tracer
from tts_actor.wire.messages import SynthesisRequest

log = get_logger(__name__)
VOICES_TTL_S = 10.0  # how long the edge trusts its copy of the fleet's voice list
REQUEST_FIELDS = {f.name for f in dataclasses.fields(SynthesisRequest)}
# reply headers that describe one message, not the audio: not forwarded to the HTTP caller
_PER_MESSAGE = ("tts-chunk-", "tts-segment-", "tts-timings")


@dataclass
class _Chunk:
    """What the edge needs of a piece of audio: the bytes and the reply headers."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class HttpEdge:
    """The Starlette app and its uvicorn server; ``start(nc)`` binds and serves, ``stop()`` drains."""

    def __init__(self, settings: Settings, edge: EdgeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
        check_exposure(host, edge)
        self.settings = settings
        self.edge = edge
        self.host = host
        self.port = port
        self.client: TtsClient | None = None
        self._voices: tuple[float, dict[str, str]] = (-VOICES_TTL_S, {})
        self._server: EdgeServer | None = None
        self._link: LinkWatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.app = CutStreams(
            BearerAuth(
                Starlette(
                    routes=[
                        Route("/v1/audio/speech", self.speech, methods=["POST"]),
                        Route("/v1/models", self.models, methods=["GET"]),
                        Route("/v1/models/{model:str}", self.model, methods=["GET"]),
                        Route("/v1/audio/voices", self.voices, methods=["GET"]),
                        Route("/healthz", self.healthz, methods=["GET"]),
                        Route("/readyz", self.readyz, methods=["GET"]),
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

    async def start(self, nc: Client, link: LinkWatch | None = None) -> None:
        """Bind now (a busy port fails here, not later), then serve in a task of its own.

        ``link`` tells how long NATS has been gone: ``/healthz`` fails past TTS_HEALTH_NATS_GRACE_S.
        """
        self._link = link
        # no retries here: an HTTP caller gets 429/503 with Retry-After at once and decides (admission stays honest)
        self.client = TtsClient(
            nc, self.settings.subject_prefix, timeout_s=self.settings.synthesis_timeout_s + 5, retry_policy=None
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
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)

    # --- helpers -------------------------------------------------------------------
    def _client(self) -> TtsClient:
        assert self.client is not None, "HttpEdge.start() first"
        return self.client

    def _error(self, error: TtsError, request: Request) -> JSONResponse:
        status, headers, body = error_response(error)
        self._log(request, status, error.code.value)
        return JSONResponse(body, status, headers=headers)

    def _log(self, request: Request, status: int, code: str, **extra: Any) -> None:
        started = request.scope.get("state", {}).get("started")
        ms = round((time.perf_counter() - started) * 1000, 1) if started else None
        log.info("http_request", method=request.method, path=request.url.path, status=status, code=code, ms=ms, **extra)

    async def _read_json(self, request: Request) -> Any:
        """The body, refused past ``max_body_bytes`` before it is all read."""
        limit = self.edge.max_body_bytes
        too_large = TtsError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"request body over {limit} bytes",
            "Send shorter input (split long texts), or raise TTS_HTTP_MAX_BODY_BYTES.",
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        data = bytearray()
        try:
            async for part in request.stream():
                data += part
                if len(data) > limit:
                    raise too_large
        except ClientDisconnect:  # gone, or dropped for sending too slowly (guard.py): nobody reads an answer
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                "the connection closed before the request body was complete",
                "Send the whole body promptly; the server's limit is TTS_HTTP_BODY_TIMEOUT_S.",
            ) from None
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                f"request body is not valid JSON: {str(exc)[:200]}",
                'Send a JSON object: {"model": "tts-1", "input": "...", "voice": "alloy"}.',
            ) from None

    async def _voice_languages(self) -> dict[str, str]:
        """The fleet's voice ids and their languages, refreshed every VOICES_TTL_S; empty if it does not answer."""
        fetched_at, voices = self._voices
        if time.monotonic() - fetched_at < VOICES_TTL_S:
            return voices
        try:
            voices = voice_languages(await self._client().voices())
        except Exception as exc:  # the synthesis request will say what is wrong, with its own code
            log.debug("voices_unavailable", error=repr(exc))
            return voices
        self._voices = (time.monotonic(), voices)
        return voices

    # --- routes --------------------------------------------------------------------
    async def speech(self, request: Request) -> Response:
        """POST /v1/audio/speech: the first audio (or the error) is awaited before the status is sent."""
        request.scope.setdefault("state", {})["started"] = time.perf_counter()
        ctx = extract_context(request.headers)  # the caller's W3C traceparent, carried on into the NATS request
        span = tracer().start_span("POST /v1/audio/speech", context=ctx, kind=SpanKind.SERVER)
        if span.get_span_context().is_valid:  # tracing on: our span; off: the caller's context goes on as is
            ctx = trace.set_span_in_context(span, ctx)
        token = otel_context.attach(ctx)
        handed_off = False
        try:
            if not self._client().nc.is_connected:  # publishing now would wait for a reconnect: answer instead
                raise TtsError(
                    ErrorCode.BACKEND_NOT_READY,
                    "the HTTP edge has no connection to NATS right now",
                    "Retry shortly; check that the NATS server at NATS_URL is up.",
                    retry_after_ms=1000,
                )
            call = map_speech_request(
                await self._read_json(request), self.edge, await self._voice_languages(), REQUEST_FIELDS
            )
            span.set_attributes({"tts.format": call.response_format, "tts.stream_format": call.stream_format})
            chunks = self._chunks(call)
            first = await anext(chunks)
            response = self._stream_response(request, call, chunks, first, span)
            handed_off = True  # the span ends when the last byte is sent
            return response
        except TtsError as error:
            span.set_status(Status(StatusCode.ERROR, error.message))
            span.set_attribute("tts.error_code", error.code.value)
            return self._error(error, request)
        except StopAsyncIteration:
            error = TtsError(ErrorCode.INTERNAL, "the service sent no audio", "Report this with the service log.")
            return self._error(error, request)
        finally:
            otel_context.detach(token)
            if not handed_off:
                span.end()

    async def _chunks(self, call: SpeechCall) -> AsyncIterator[_Chunk]:
        """The audio as the service sends it: segment by segment where the client streams, else whole."""
        client = self._client()
        request = call.request()
        stream = getattr(client, "stream", None)
        if stream is None:  # a client without streaming: the whole file as one piece
            reply = await client.synthesize(request)  # type: ignore[arg-type]
            yield _Chunk(reply.audio, dict(reply.headers))
            return
        async for chunk in stream(request):
            yield _Chunk(chunk.data, dict(chunk.headers or {}))

    def _stream_response(
        self, request: Request, call: SpeechCall, chunks: AsyncIterator[_Chunk], first: _Chunk, span: trace.Span
    ) -> StreamingResponse:
        sse = call.stream_format == "sse"
        content_type = first.headers.get("Content-Type") or CONTENT_TYPES[call.response_format]
        headers = {k: v for k, v in first.headers.items() if _forwarded(k)}
        if sse:
            headers["Tts-Audio-Content-Type"] = content_type
        request_id = first.headers.get("Tts-Request-Id")

        async def body() -> AsyncIterator[bytes]:
            sent, completed = 0, False
            try:
                chunk: _Chunk | None = first
                while chunk is not None:
                    if chunk.data:
                        sent += len(chunk.data)
                        yield _sse_delta(chunk.data) if sse else chunk.data
                    chunk = await anext(chunks, None)
                if sse:
                    chars = len(call.body["text"])
                    usage = {"input_tokens": chars, "output_tokens": 0, "total_tokens": chars}
                    yield _sse({"type": "speech.audio.done", "usage": usage})
                completed = True
                backend = headers.get("Tts-Backend")
                self._log(request, 200, "ok", format=call.response_format, bytes=sent, backend=backend)
            except TtsError as error:  # the status is sent already: cut the response, so it cannot pass as whole
                span.set_status(Status(StatusCode.ERROR, error.message))
                self._log(request, 200, error.code.value, cut_after_bytes=sent, message=error.message)
                raise StreamCut(error.code.value) from None
            finally:
                span.set_attribute("tts.bytes", sent)
                span.end()
                if not completed:  # the caller left, or the stream broke: stop the work behind it
                    task = asyncio.get_running_loop().create_task(self._abandon(chunks, request_id))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

        media_type = "text/event-stream" if sse else content_type
        return StreamingResponse(body(), media_type=media_type, headers=headers)

    async def _abandon(self, chunks: AsyncIterator[_Chunk], request_id: str | None) -> None:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
        if request_id and self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.cancel(request_id)

    async def models(self, request: Request) -> Response:
        try:
            status = await self._client().status()
        except TtsError as error:
            return self._error(error, request)
        return JSONResponse(models_list(status, self.edge))

    async def model(self, request: Request) -> Response:
        try:
            status = await self._client().status()
        except TtsError as error:
            return self._error(error, request)
        wanted = request.path_params["model"]
        for entry in models_list(status, self.edge)["data"]:
            if entry["id"] == wanted:
                return JSONResponse(entry)
        error = TtsError(ErrorCode.UNKNOWN_BACKEND, f"no model {wanted!r}", "GET /v1/models lists them.")
        return self._error(error, request)

    async def voices(self, request: Request) -> Response:
        try:
            voices = await self._client().voices()
        except TtsError as error:
            return self._error(error, request)
        return JSONResponse(voices_list(voices, self.edge))

    async def healthz(self, request: Request) -> Response:
        """Liveness: this process answers, and NATS has not been gone past the grace; the fleet is /readyz's."""
        gone = self._link.verdict(self.settings.health_nats_grace_s) if self._link is not None else None
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


def _forwarded(header: str) -> bool:
    """The service's headers that describe the audio as a whole go on to the HTTP caller."""
    name = header.lower()
    return name.startswith("tts-") and not name.startswith(_PER_MESSAGE)


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _sse_delta(data: bytes) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})


async def run_http_edge(settings: Settings, edge: HttpEdge, nats_url: str) -> None:
    """``tts-actor http``: the edge alone, connected to the fleet's NATS, until SIGINT/SIGTERM."""
    from tts_actor.nats_edge.auth import connect_options
    from tts_actor.nats_edge.connection import connect

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    link = LinkWatch()
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
