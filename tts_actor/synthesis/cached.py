"""The synthesis path's use of the fleet's stores: voice profiles in, the audio cache around.

:class:`CachedSynthesis` is what ``TtsService._serve`` calls: it turns a ``voice_profile`` into
the reference fields the cloning adapters take, keys the audio cache on everything that
changes the audio, answers a hit without a backend (whole or streamed, ``Tts-Cache: hit``),
and keeps a synthesized reply in the cache from a background task once it is out, so the
cache never delays an answer. The cache is an optimisation: when it is unavailable the
request is synthesized as if it were a miss.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any

from nats.aio.client import Client
from opentelemetry.trace import Span

from tts_actor import __version__
from tts_actor.backends.base import BackendAdapter
from tts_actor.config import Settings
from tts_actor.lifecycle.registry import Route
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_cache import AudioCache, CachedAudio, audio_cache_key
from tts_actor.synthesis.profiles import ProfileStore
from tts_actor.wire.messages import Header, SynthesisRequest
from tts_actor.wire.replies import HEADER_SLACK, Publish, ReplyWriter, headers_size, parse_timings, publish_whole

log = get_logger(__name__)
# what a cached file keeps of its reply's headers: what describes the audio, nothing about the request
KEPT_HEADERS = (
    Header.CONTENT_TYPE,
    Header.BACKEND,
    Header.VOICE,
    Header.LANGUAGE,
    Header.SAMPLE_RATE,
    Header.DURATION_MS,
    Header.SEGMENT_COUNT,
    Header.TIMINGS,
)
HIT, MISS, BYPASS = "hit", "miss", "bypass"


def adapter_identity(adapter: BackendAdapter) -> str:
    """A stable stand-in for a model revision when the model manager knows none (local files, packaged voices)."""
    refs = ",".join(f"{r.repo_id}@{r.revision or 'main'}" for r in adapter.models())
    local = adapter.local_model_dir
    return f"{type(adapter).__module__}.{type(adapter).__qualname__}/{__version__}/{refs}/{local or ''}"


class Recorder:
    """Wraps a :class:`ReplyWriter`'s publish: the bytes and headers that went out, to be cached afterwards."""

    def __init__(self, writer: ReplyWriter, key: str) -> None:
        self.writer = writer
        self.key = key
        self.parts: list[bytes] = []
        self.headers: dict[str, str] = {}
        inner = writer.publish

        async def publish(data: bytes, headers: dict[str, str]) -> None:
            await inner(data, headers)
            if Header.SERVICE_ERROR_CODE.value in headers:
                return
            if data:
                self.parts.append(data)
            self.headers.update({h.value: headers[h.value] for h in KEPT_HEADERS if h.value in headers})

        writer.publish = publish

    def file(self) -> bytes:
        """The whole file: a stream's bytes with what a stream leaves unknown (lengths) filled in."""
        data = b"".join(self.parts)
        encoder = self.writer.encoder
        return encoder.finish_whole(data) if self.writer.request.stream and encoder is not None else data


class CachedSynthesis:
    """Profiles and the audio cache for :class:`tts_actor.nats_edge.service.TtsService`."""

    def __init__(self, nc: Client, settings: Settings, profiles: ProfileStore) -> None:
        self.nc = nc
        self.profiles = profiles
        self.cache = AudioCache(nc, settings)
        self._stores: set[asyncio.Task[None]] = set()

    async def with_profile(self, request: SynthesisRequest) -> SynthesisRequest:
        """The request with its profile's clip, transcript and language as the reference; unknown ids raise."""
        if request.voice_profile is None:
            return request
        profile = await self.profiles.get(request.voice_profile)
        return dataclasses.replace(
            request,
            reference_audio=profile.audio,
            reference_text=profile.reference_text,
            reference_language=profile.language,
            reference_digest=profile.digest,
        )

    @staticmethod
    def key(request: SynthesisRequest, route: Route) -> str:
        """Everything that changes the audio; a cloned voice by its clip's digest, never by a profile id."""
        voice = route.voice.id
        if request.reference_audio is not None:
            digest = request.reference_digest or hashlib.sha256(request.reference_audio).hexdigest()
            voice = f"{voice}+{digest}"
        options: dict[str, Any] = dataclasses.asdict(request.options)
        options |= {"reference_text": request.reference_text, "reference_language": request.reference_language}
        actor = route.actor
        return audio_cache_key(
            text=request.text,
            language=request.language,
            backend=actor.name,
            voice=voice,
            audio_format=request.format.value,
            options=options,
            sample_rate=request.sample_rate,
            bitrate=request.bitrate,
            model_revision=actor.model_revision or adapter_identity(actor.adapter),
        )

    async def lookup(self, request: SynthesisRequest, key: str, span: Span) -> CachedAudio | None:
        """The cached reply, or None (a miss, a bypass, or the cache unavailable)."""
        if not request.cache:
            span.set_attribute("tts.audio_cache", BYPASS)
            metrics.AUDIO_CACHE.labels(BYPASS).inc()
            return None
        cached = await self.cache.get(key)
        outcome = HIT if cached is not None and cached.data else MISS
        span.set_attribute("tts.audio_cache", outcome)
        metrics.AUDIO_CACHE.labels(outcome).inc()
        return cached if outcome == HIT else None

    def record(self, writer: ReplyWriter, request: SynthesisRequest, key: str) -> Recorder | None:
        """Mark the reply as a miss (or bypass) and record what goes out, to cache it afterwards."""
        writer.headers[Header.CACHE.value] = MISS if request.cache else BYPASS
        return Recorder(writer, key) if request.cache else None

    def store_later(self, recorder: Recorder | None) -> None:
        """Cache a reply that went out whole, in the background: the caller has its answer already."""
        if recorder is None or not recorder.parts:
            return
        task = asyncio.create_task(self._store(recorder.key, recorder.file(), dict(recorder.headers)))
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    async def _store(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        try:
            stored = await self.cache.put(key, data, headers)
        except Exception as exc:  # the put logs its own failures; this is for anything else
            log.warning("audio_cache_store_failed", error=repr(exc))
            return
        log.debug("audio_cache_stored", key=key[:16], bytes=len(data), stored=stored)

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Let puts in flight finish (shutdown, tests), within a bound."""
        if self._stores:
            await asyncio.wait(set(self._stores), timeout=timeout_s)

    async def answer(
        self,
        publish: Publish,
        cached: CachedAudio,
        request: SynthesisRequest,
        route: Route,
        request_id: str,
        started: float,
    ) -> int:
        """Send a cached file as the reply (whole, or as a stream with its end message); the messages sent."""
        first = dict(cached.headers) | {Header.REQUEST_ID.value: request_id, Header.CACHE.value: HIT}
        if route.fallback_from:
            first[Header.FALLBACK_FROM.value] = route.fallback_from
        if request.stream:
            return await _stream_file(publish, cached.data, first, self.nc.max_payload, request_id, started)
        return await publish_whole(publish, cached.data, first, self.nc.max_payload)


async def _stream_file(
    publish: Publish, data: bytes, headers: dict[str, str], max_payload: int, request_id: str, started: float
) -> int:
    """A cached file as a stream: max_payload-sized messages, each naming the segment its bytes mostly belong to
    (by position: a cached file has no segment boundaries in bytes), then the end message with the cached timings.
    """
    timings = parse_timings(headers)
    duration_ms = int(headers.get(Header.DURATION_MS.value, "0") or 0)
    totals = {
        k: headers[k]
        for k in (Header.DURATION_MS.value, Header.SEGMENT_COUNT.value, Header.TIMINGS.value)
        if k in headers
    }
    first = {k: v for k, v in headers.items() if k not in totals}
    offset = messages = 0
    while offset < len(data):
        position_ms = duration_ms * offset / len(data)
        timing = next((t for t in timings if t["end_ms"] > position_ms), timings[-1] if timings else None)
        message_headers = {} if messages else dict(first)
        message_headers[Header.REQUEST_ID.value] = request_id
        if timing is not None:
            message_headers |= {
                Header.SEGMENT_INDEX.value: str(timing["index"]),
                Header.SEGMENT_START_MS.value: str(timing["start_ms"]),
                Header.SEGMENT_END_MS.value: str(timing["end_ms"]),
            }
        room = max(1024, max_payload - headers_size(message_headers) - HEADER_SLACK)
        await publish(data[offset : offset + room], message_headers)
        offset += room
        messages += 1
    end = totals | {
        Header.REQUEST_ID.value: request_id,
        Header.CACHE.value: HIT,
        Header.STREAM_END.value: "1",
        Header.TOTAL_BYTES.value: str(len(data)),
        Header.CHUNK_COUNT.value: str(messages),
        Header.FIRST_AUDIO_MS.value: str(round((time.perf_counter() - started) * 1000)),
    }
    await publish(b"", end)
    return messages + 1
