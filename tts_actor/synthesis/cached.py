"""The synthesis path's use of the fleet's stores: voice profiles in, the audio cache around.

:class:`CachedSynthesis` is what :mod:`tts_actor.synthesis.pipeline` calls: it turns a ``voice_profile`` into
the reference fields the cloning adapters take, keys the audio cache on everything that
changes the audio, and leaves the rest to :class:`~tts_actor.synthesis.coalescing.Coalescer`: a hit
answered without a backend, a join to the same synthesis in progress (here or on another instance), and
the store of the copy a :class:`~tts_actor.synthesis.sinks.CacheTee` kept of a synthesized reply, in the
background once the reply is out, so the cache never delays an answer. The cache is an optimisation: when
it is unavailable the request is synthesized as if it were a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from typing import Any

from nats.aio.client import Client
from opentelemetry.trace import Span

from tts_actor import __version__
from tts_actor.audio import waveform
from tts_actor.audio.encoding import SpeechEncoder, word_timings_json
from tts_actor.backends.base import BackendAdapter
from tts_actor.config import Settings
from tts_actor.lifecycle.registry import Route
from tts_actor.synthesis.audio_cache import AudioCache, audio_cache_key
from tts_actor.synthesis.claims import FleetClaims
from tts_actor.synthesis.coalescing import BYPASS, MISS, Answer, Coalescer, Lead
from tts_actor.synthesis.joining import CACHED_WAVEFORM, WORD_TIMINGS_KEPT
from tts_actor.synthesis.profiles import ProfileStore
from tts_actor.synthesis.sinks import CacheTee
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest, Timings

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
    Header.WATERMARK,
)


def adapter_identity(adapter: BackendAdapter) -> str:
    """A stable stand-in for a model revision when the model manager knows none (local files, packaged voices)."""
    refs = ",".join(f"{r.repo_id}@{r.revision or 'main'}" for r in adapter.models())
    local = adapter.local_model_dir
    return f"{type(adapter).__module__}.{type(adapter).__qualname__}/{__version__}/{refs}/{local or ''}"


KEY_MEMO = 1024


class CachedSynthesis:
    """Profiles and the audio cache for the synthesis pipeline."""

    def __init__(self, nc: Client, settings: Settings, profiles: ProfileStore) -> None:
        self.nc = nc
        self.profiles = profiles
        self.cache = AudioCache(nc, settings)
        self.marked = settings.mark_synthetic
        self.coalescer = Coalescer(self.cache, FleetClaims(nc, settings))
        self._keys: OrderedDict[tuple[object, ...], str] = OrderedDict()  # see key()

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

    def key(self, request: SynthesisRequest, route: Route, watermark: str | None = None) -> str:
        """Everything that changes the audio; a cloned voice by its clip's digest, never by a profile id.

        ``watermark``: the inaudible mark the service adds (None: none), so that turning it on never serves
        unmarked audio. Remembered for the last :data:`KEY_MEMO` requests: a digest of canonical JSON costs more
        than the rest of a hit from memory, and hot requests repeat.
        """
        if request.reference_audio is not None and request.reference_digest is None:
            return _key(request, route, self.marked, watermark)  # a raw clip: hashing it is the key's cost either way
        actor = route.actor
        memo = (
            request.text,
            request.language,
            request.options,
            request.reference_digest,
            request.reference_text,
            request.reference_language,
            request.format,
            request.sample_rate,
            request.bitrate,
            request.timings,
            route.voice.id,
            actor.name,
            actor.model_revision,
            id(actor.adapter),
            watermark,
        )
        key = self._keys.get(memo)
        if key is None:
            key = self._keys[memo] = _key(request, route, self.marked, watermark)
            if len(self._keys) > KEY_MEMO:
                self._keys.popitem(last=False)
        return key

    async def settle(self, key: str, answer: Answer, span: Span) -> Lead | str:
        """A :class:`Lead` to synthesize, or how the request was answered without a backend (hit, joined)."""
        return await self.coalescer.settle(key, answer, span)

    def finish(
        self, lead: Lead, tee: CacheTee | None, headers: dict[str, str], encoder: SpeechEncoder, reference: str | None
    ) -> None:
        """The reply went out: joiners get the file, the cache stores it in the background (the caller has it).

        ``reference``: the digest of the clip of a cloned voice (:func:`reference_of`), indexed for erasure.
        """
        kept = {h.value: headers[h.value] for h in KEPT_HEADERS if h.value in headers}
        kept[CACHED_WAVEFORM] = waveform.encode(encoder.waveform.points(waveform.CACHED_POINTS))
        if encoder.word_timings:  # what a hit or a joiner sends as the timings parts (a put too large is dropped)
            kept[WORD_TIMINGS_KEPT] = word_timings_json(encoder.timings).decode()
        self.coalescer.finish(lead, tee.file if tee is not None else None, kept, reference)

    async def abandon(self, lead: Lead, error: BaseException) -> None:
        """The synthesis stopped without a file: joiners try again, the fleet's claim goes."""
        await self.coalescer.abandon(lead, error)

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Let puts in flight finish (shutdown, tests), within a bound."""
        await self.coalescer.drain(timeout_s)

    async def close(self) -> None:
        """Shutdown: stores in flight finished (bounded), the cache's watch stopped."""
        await self.drain()
        await self.cache.close()


def _key(request: SynthesisRequest, route: Route, marked: bool, watermark: str | None) -> str:
    voice = route.voice.id
    if (digest := reference_of(request)) is not None:
        voice = f"{voice}+{digest}"
    options: dict[str, Any] = dataclasses.asdict(request.options)
    options |= {"reference_text": request.reference_text, "reference_language": request.reference_language}
    if watermark is not None:  # absent when off: the keys of unmarked audio stay what they were
        options["watermark"] = watermark
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
        marked=marked,
    )


def reference_of(request: SynthesisRequest) -> str | None:
    """The digest of a cloned voice's clip (a profile's, or an inline clip's), None for a built-in voice."""
    if request.reference_audio is None:
        return None
    return request.reference_digest or hashlib.sha256(request.reference_audio).hexdigest()


def cache_header(request: SynthesisRequest) -> dict[str, str]:
    """A synthesized reply's ``Tts-Cache``: a miss, or a bypass when the caller said ``cache: false``."""
    return {Header.CACHE.value: MISS if request.cache else BYPASS}
