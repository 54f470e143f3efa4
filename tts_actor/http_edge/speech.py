"""``POST /v1/audio/speech``: an OpenAI speech request in, the fleet's audio out as it arrives.

The request becomes a ``tts.synthesize`` request (same routing, limits and errors as the
translator's); the first audio, or the error, is awaited before the HTTP status is sent, and
the rest goes on with chunked transfer (or as SSE deltas). A failure after the status ends an
SSE stream with a ``speech.audio.error`` event and cuts a raw audio response (so it cannot pass
as whole); the work behind an abandoned response is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tts_actor.client.tts_client import TtsClient
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.access_log import error_reply, log_request, mark_started
from tts_actor.http_edge.body import read_body
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.http_edge.middleware import StreamCut, http_caller
from tts_actor.http_edge.openai_compat import (
    CONTENT_TYPES,
    PRIORITY_HEADER,
    SpeechCall,
    error_response,
    map_speech_request,
    voice_languages,
)
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


class SpeechRoute:
    """The speech route; ``background`` holds the cancellations of abandoned responses, for the edge's stop."""

    def __init__(self, edge: EdgeSettings, client: Callable[[], TtsClient]) -> None:
        self.edge = edge
        self._client = client
        self._voices: tuple[float, dict[str, str]] = (-VOICES_TTL_S, {})
        self.background: set[asyncio.Task[None]] = set()

    async def handle(self, request: Request) -> Response:
        """POST /v1/audio/speech: the first audio (or the error) is awaited before the status is sent."""
        mark_started(request)
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
                await self._read_json(request),
                self.edge,
                await self._voice_languages(),
                REQUEST_FIELDS,
                request.headers.get(PRIORITY_HEADER),
            )
            span.set_attributes({"tts.format": call.response_format, "tts.stream_format": call.stream_format})
            chunks = self._chunks(call, http_caller(request))
            first = await anext(chunks)
            response = self._stream_response(request, call, chunks, first, span)
            handed_off = True  # the span ends when the last byte is sent
            return response
        except TtsError as error:
            span.set_status(Status(StatusCode.ERROR, error.message))
            span.set_attribute("tts.error_code", error.code.value)
            return error_reply(error, request)
        except StopAsyncIteration:
            error = TtsError(ErrorCode.INTERNAL, "the service sent no audio", "Report this with the service log.")
            return error_reply(error, request)
        finally:
            otel_context.detach(token)
            if not handed_off:
                span.end()

    async def _read_json(self, request: Request) -> Any:
        """The body, refused past ``max_body_bytes`` before it is all read."""
        fix = "Send shorter input (split long texts), or raise TTS_HTTP_MAX_BODY_BYTES."
        data = await read_body(request, self.edge.max_body_bytes, fix)
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

    async def _chunks(self, call: SpeechCall, caller: str) -> AsyncIterator[_Chunk]:
        """The audio as the service sends it: segment by segment where the client streams, else whole.

        ``caller`` (``Tts-Caller``): the API key's id, which the audit trail names for a cloned voice's use.
        """
        client = self._client()
        request = call.request()
        stream = getattr(client, "stream", None)
        if stream is None:  # a client without streaming: the whole file as one piece
            reply = await client.synthesize(request)  # type: ignore[arg-type]
            yield _Chunk(reply.audio, dict(reply.headers))
            return
        async for chunk in stream(request, caller=caller):
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
                log_request(request, 200, "ok", format=call.response_format, bytes=sent, backend=backend)
            except TtsError as error:  # the status is sent already
                span.set_status(Status(StatusCode.ERROR, error.message))
                if sse:  # an event says why the stream ends, in OpenAI's error shape; no done event follows
                    log_request(request, 200, error.code.value, error_event_after_bytes=sent, message=error.message)
                    completed = True  # the service ended the request itself: nothing to cancel
                    yield _sse({"type": "speech.audio.error", "error": error_response(error)[2]["error"]})
                    return
                # raw audio has no way to say it: cut the response, so it cannot pass as whole
                log_request(request, 200, error.code.value, cut_after_bytes=sent, message=error.message)
                raise StreamCut(error.code.value) from None
            finally:
                span.set_attribute("tts.bytes", sent)
                span.end()
                if not completed:  # the caller left, or the stream broke: stop the work behind it
                    task = asyncio.get_running_loop().create_task(self._abandon(chunks, request_id))
                    self.background.add(task)
                    task.add_done_callback(self.background.discard)

        media_type = "text/event-stream" if sse else content_type
        return StreamingResponse(body(), media_type=media_type, headers=headers)

    async def _abandon(self, chunks: AsyncIterator[_Chunk], request_id: str | None) -> None:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
        if request_id:
            with contextlib.suppress(Exception):
                await self._client().cancel(request_id)


def _forwarded(header: str) -> bool:
    """The service's headers that describe the audio as a whole go on to the HTTP caller."""
    name = header.lower()
    return name.startswith("tts-") and not name.startswith(_PER_MESSAGE)


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _sse_delta(data: bytes) -> bytes:
    return _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
