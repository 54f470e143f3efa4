"""The synthesis path's use of the fleet's stores: voice profiles in, the audio cache around.

:class:`CachedSynthesis` is what :mod:`tts_actor.synthesis.pipeline` calls: it turns a ``voice_profile`` into
the reference fields the cloning adapters take, keys the audio cache on everything that
changes the audio, answers a hit without a backend (whole or streamed, ``Tts-Cache: hit``),
and stores the copy a :class:`~tts_actor.synthesis.sinks.CacheTee` kept of a synthesized reply
from a background task once the reply is out, so the
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
from tts_actor.synthesis.sinks import CacheTee
from tts_actor.wire.framing import Framer
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest, Timings
from tts_actor.wire.replies import parse_timings

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
# the word timings JSON, kept beside the headers in the cache entry's metadata (never a header on the wire)
WORD_TIMINGS_KEPT = "word-timings"
MAX_KEPT_WORD_TIMINGS = 256 * 1024  # bytes: a reply with more is not cached (the metadata is one NATS message)
TOTALS = (Header.DURATION_MS, Header.SEGMENT_COUNT, Header.TIMINGS)  # a stream has them on its end message


def adapter_identity(adapter: BackendAdapter) -> str:
    """A stable stand-in for a model revision when the model manager knows none (local files, packaged voices)."""
    refs = ",".join(f"{r.repo_id}@{r.revision or 'main'}" for r in adapter.models())
    local = adapter.local_model_dir
    return f"{type(adapter).__module__}.{type(adapter).__qualname__}/{__version__}/{refs}/{local or ''}"


class CachedSynthesis:
    """Profiles and the audio cache for the synthesis pipeline."""

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
            word_timings=request.timings is Timings.WORD,
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

    def store_later(self, tee: CacheTee | None, headers: dict[str, str], word_timings: bytes | None = None) -> None:
        """Cache a reply that went out whole, in the background: the caller has its answer already."""
        if tee is None or not tee.file:
            return
        kept = {h.value: headers[h.value] for h in KEPT_HEADERS if h.value in headers}
        if word_timings is not None:
            if len(word_timings) > MAX_KEPT_WORD_TIMINGS:
                log.info("audio_cache_store_skipped", key=tee.key[:16], word_timings_bytes=len(word_timings))
                return
            kept[WORD_TIMINGS_KEPT] = word_timings.decode()
        task = asyncio.create_task(self._store(tee.key, tee.file, kept))
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
        self, framer: Framer, cached: CachedAudio, request: SynthesisRequest, route: Route, started: float
    ) -> None:
        """Send a cached file as the reply: whole, or as a stream with its end message."""
        headers = dict(cached.headers) | {Header.CACHE.value: HIT}
        words = headers.pop(WORD_TIMINGS_KEPT, None)
        if route.fallback_from:
            headers[Header.FALLBACK_FROM.value] = route.fallback_from
        words = words if request.timings is Timings.WORD else None
        if not request.stream:
            if words is not None:  # as a synthesized reply sends them: before a whole file's audio
                await framer.timings(words.encode())
            framer.first = headers
            await framer.whole(cached.data, {})
            return
        totals = {k.value: headers.pop(k.value) for k in TOTALS if k.value in headers}
        framer.first = headers
        await _stream_file(framer, cached.data, parse_timings(totals), int(totals.get(Header.DURATION_MS.value) or 0))
        if words is not None:  # and before a stream's end message
            await framer.timings(words.encode())
        await framer.end(totals | {Header.CACHE.value: HIT, Header.FIRST_AUDIO_MS.value: _ms_since(started)})


def cache_header(request: SynthesisRequest) -> dict[str, str]:
    """A synthesized reply's ``Tts-Cache``: a miss, or a bypass when the caller said ``cache: false``."""
    return {Header.CACHE.value: MISS if request.cache else BYPASS}


async def _stream_file(framer: Framer, data: bytes, timings: list[dict[str, int]], duration_ms: int) -> None:
    """A cached file as a stream: max_payload-sized messages, each naming the segment its bytes mostly belong to
    (by position: a cached file has no segment boundaries in bytes).
    """
    offset = 0
    while offset < len(data):
        position_ms = duration_ms * offset / len(data)
        timing = next((t for t in timings if t["end_ms"] > position_ms), timings[-1] if timings else None)
        headers: dict[str, str] = {}
        if timing is not None:
            headers = {
                Header.SEGMENT_INDEX.value: str(timing["index"]),
                Header.SEGMENT_START_MS.value: str(timing["start_ms"]),
                Header.SEGMENT_END_MS.value: str(timing["end_ms"]),
            }
        room = framer.room(headers)
        await framer.stream(data[offset : offset + room], headers)
        offset += room


def _ms_since(started: float) -> str:
    return str(round((time.perf_counter() - started) * 1000))
