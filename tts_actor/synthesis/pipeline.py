"""The synthesis use case, with no transport in it: a request and its route in, reply messages out.

The NATS endpoint (:mod:`tts_actor.nats_edge.synthesize`) parses, admits and routes; what follows is
here: wait (on events, within ``wait_ms``) for the chosen actor, apply the voice profile, answer from
the audio cache or cut the text into segments, hand the job to the actor and drive the audio path
(:mod:`tts_actor.synthesis.sinks`) whose last stage writes through a :data:`~tts_actor.wire.framing.Publish`.
A unit test drives it with a ``Publish`` that records messages.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid

from opentelemetry import context as otel_context
from opentelemetry import trace

from tts_actor import __version__
from tts_actor.audio.encoding import FormatRequest, SpeechEncoder
from tts_actor.audio.segmenter import segment_text
from tts_actor.audio.tags import Mark, synthetic_mark
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.lifecycle.registry import Registry, Route
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.cached import CachedSynthesis, cache_header, reference_of
from tts_actor.synthesis.coalescing import BYPASS, Answer, Lead
from tts_actor.synthesis.marking import Marking
from tts_actor.synthesis.reply import ReplySink, audio_headers, audio_totals
from tts_actor.synthesis.sinks import CacheTee, EncodedSink, EncodeStage, QueuedSink
from tts_actor.wire.framing import Framer, Publish
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import NAME_RE, SynthesisRequest, Timings

log = get_logger(__name__)
# what joiners share of `first`
_FLIGHT_FIRST = (Header.BACKEND.value, Header.VOICE.value, Header.LANGUAGE.value, Header.WATERMARK.value)


async def wait_ready(actor: BackendActor, bound_s: float) -> None:
    """Up to ``bound_s``, on events: through an unload in progress, the reload it needs, the load."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not actor.ready and not actor.stopping and (remaining := deadline - loop.time()) > 0:
        actor.demand()
        if not actor.pending:
            return  # failed, or missing with nothing under way: waiting would change nothing
        await actor.wait_settled(remaining)


class SynthesisPipeline:
    """What every synthesis of this instance shares: the stores, the payload limit, the jobs by request id."""

    def __init__(self, registry: Registry, settings: Settings, store: CachedSynthesis | None = None) -> None:
        """``store``: voice profiles and the audio cache; None runs without them (no cache, no profiles)."""
        self.registry = registry
        self.settings = settings
        self.store = store
        self.jobs: dict[str, SynthesisJob] = {}  # by request id, for tts.cancel
        self.marking = Marking(settings.watermark)  # TTS_WATERMARK, and whether the extra is installed

    def request_id(self, wanted: str | None) -> str:
        """The caller's id when it is a usable, unused name, else a fresh one."""
        if wanted and NAME_RE.match(wanted) and wanted not in self.jobs:
            return wanted
        return uuid.uuid4().hex

    def cancel(self, request_id: str) -> bool:
        """Stop a request served here now (its engine stops at the next segment); False when it is not here."""
        job = self.jobs.get(request_id)
        if job is None:
            return False
        job.control.cancelled = True
        stop = job.control.stop_error()
        if stop is not None and not job.future.done():
            job.future.set_exception(stop)
        return True

    def stop_voice(self, digest: str) -> int:
        """Stop every request served here with the clip ``digest`` (its voice was erased); how many there were.

        Each stops at its next segment with ``unknown_voice``: a deleted voice is not spoken on.
        """
        stopped = 0
        for job in list(self.jobs.values()):
            if job.request.reference_digest != digest:
                continue
            job.control.voice_erased = job.control.cancelled = True
            stop = job.control.stop_error()
            if stop is not None and not job.future.done():
                job.future.set_exception(stop)
            stopped += 1
        return stopped

    def run(
        self,
        request: SynthesisRequest,
        route: Route,
        control: JobControl,
        publish: Publish,
        max_payload: int,
        started: float | None = None,
    ) -> SynthesisRun:
        """One request; ``max_payload``: the largest message the transport takes, headers included."""
        started = time.perf_counter() if started is None else started
        return SynthesisRun(self, request, route, control, publish, max_payload, started)


class SynthesisRun:
    """One request through the pipeline; :meth:`fail` answers an error the way the reply so far calls for."""

    def __init__(
        self,
        pipeline: SynthesisPipeline,
        request: SynthesisRequest,
        route: Route,
        control: JobControl,
        publish: Publish,
        max_payload: int,
        started: float,
    ) -> None:
        self.pipeline = pipeline
        self.max_payload = max_payload
        self.request = request
        self.route = route
        self.control = control
        self.publish = publish
        self.started = started
        self.reply: ReplySink | None = None  # once audio may go out
        self.job: SynthesisJob | None = None  # the latest one handed to the actor
        self.lead: Lead | None = None  # this request synthesizes for the cache (and whoever joins it)
        self.watermark: str | None = None  # the inaudible mark this service adds to the audio (None: none)

    @property
    def messages(self) -> int:
        return self.reply.framer.messages if self.reply is not None else 0

    async def serve(self) -> None:
        """The whole answer, or a :class:`TtsError` (nothing of it sent, or part of a stream)."""
        try:
            await self._serve()
        except BaseException as exc:
            if self.lead is not None and self.pipeline.store is not None:  # joiners try again; the claim goes
                await self.pipeline.store.abandon(self.lead, exc)
            raise
        finally:
            if (job := self.job) is not None:
                self.pipeline.jobs.pop(self.control.request_id, None)
                if not job.future.done():  # nobody waits for the rest: free the backend
                    job.control.cancelled = True
                    job.future.cancel()

    async def fail(self, error: TtsError) -> None:
        """The error reply; a stream's, then its end message (with what was sent, once audio went out)."""
        try:
            if self.reply is not None:
                await self.reply.fail(error, self.request.stream)
            else:
                await Framer(self.publish, self.max_payload, self.control.request_id).fail(error, self.request.stream)
        except Exception as exc:  # no reply subject, or the connection went away
            log.warning("reply_failed", error=repr(exc))

    async def _serve(self) -> None:
        pipeline, actor, span = self.pipeline, self.route.actor, trace.get_current_span()
        request = self.request
        if not actor.ready:  # the actor the router chose: waited for, never routed again
            await wait_ready(actor, request.wait_ms / 1000)
            if not actor.ready:
                raise pipeline.registry.no_backend_ready(request, actor)
        self.watermark = pipeline.marking.name_for(actor.adapter.spec)  # before the cache: keys differ by mark
        store = pipeline.store
        key = await self._cache_key(store) if store is not None else self._no_store()
        if key is None:
            return  # answered from the audio cache, without a backend
        request = self.request
        spec = actor.adapter.spec
        cost = functools.partial(actor.adapter.spoken_cost, voice=self.route.voice)  # the engine's own units
        segments = segment_text(request.text, spec.max_segment_chars, spec.min_segment_chars, request.language, cost)
        span.set_attribute("tts.segments", len(segments))
        mark = self._mark() if pipeline.settings.mark_synthetic else None
        wanted = FormatRequest(
            request.format.value, request.sample_rate, request.bitrate, mark, request.waveform_points
        )
        encoder = SpeechEncoder(
            wanted,
            pipeline.settings.segment_silence_ms,
            len(segments),
            actor.name,
            split_first=request.stream,
            word_timings=request.timings is Timings.WORD,
        )
        first = self._first_headers(store is not None)
        framer = Framer(self.publish, self.max_payload, self.control.request_id)
        self.reply = ReplySink(framer, encoder, first, self.started, actor.name)
        tee = None
        if store is not None and request.cache:
            flight = self.lead.flight if self.lead is not None else None
            tee = CacheTee(self.reply, encoder, key, flight, {k: v for k, v in first.items() if k in _FLIGHT_FIRST})
        out: EncodedSink = tee or self.reply
        stage = EncodeStage(encoder, request.stream, out, request.format.value, pipeline.marking.marker(self.watermark))
        sink = QueuedSink(first_waits=request.stream and len(segments) > 1)
        synth_started = time.perf_counter()
        while True:  # a job that an unload overtook in the queue waits out the rest of its wait_ms
            job = self.job = SynthesisJob(
                request,
                self.route.voice,
                segments,
                sink,
                self.control,
                asyncio.get_running_loop().create_future(),
                otel_context.get_current(),
            )
            pipeline.jobs[self.control.request_id] = job
            try:
                actor.submit(job)
                async for item in sink.drain(job.future):
                    await stage.add(item.segment, item.audio)
                    sink.first_out.set()
                break
            except TtsError as error:
                if encoder.timings or not await self._may_wait_again(error):
                    raise
        synth_seconds = time.perf_counter() - synth_started
        await stage.finish()
        if store is not None and self.lead is not None:  # joiners answered now, the store in the background
            store.finish(
                self.lead, tee, first | audio_headers(encoder) | audio_totals(encoder), encoder, reference_of(request)
            )
        self._done(encoder, len(segments), synth_seconds)

    async def _cache_key(self, store: CachedSynthesis) -> str | None:
        """The profile applied and the audio cache asked (or the same synthesis joined): the key to store the
        reply under, None when answered without a backend."""
        request = self.request = await store.with_profile(self.request)
        key = store.key(request, self.route, self.watermark)
        framer = Framer(self.publish, self.max_payload, self.control.request_id)
        answer = Answer(framer, request, self.route, self.started, self.control)
        settled = await store.settle(key, answer, trace.get_current_span())
        if isinstance(settled, Lead):
            self.lead = settled
            return key
        metrics.REQUESTS.labels(self.route.actor.name, "ok").inc()
        log.info("synthesized", backend=self.route.actor.name, cache=settled, bytes=framer.sent_bytes)
        return None

    def _no_store(self) -> str:
        if self.request.voice_profile is not None:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                "voice_profile was sent but this pipeline runs without the profile store",
                "Send reference_audio instead, or run the pipeline with a CachedSynthesis store.",
            )
        return ""

    def _mark(self) -> Mark:
        """The synthetic-speech comment: backend, model (its hub repositories, else the voice) and our version."""
        actor = self.route.actor
        repos = "+".join(f"{ref.repo_id}@{ref.revision or 'main'}" for ref in actor.adapter.models())
        model = f"{repos}:{self.route.voice.id}" if repos else self.route.voice.id
        return synthetic_mark(actor.name, model, __version__)

    def _first_headers(self, cached: bool) -> dict[str, str]:
        headers = {
            Header.BACKEND.value: self.route.actor.name,
            Header.VOICE.value: self.route.voice.id,
            Header.LANGUAGE.value: self.request.language,
            Header.REQUEST_ID.value: self.control.request_id,
        }
        if self.route.fallback_from:
            headers[Header.FALLBACK_FROM.value] = self.route.fallback_from
        if carried := Marking.carried(self.route.actor.adapter.spec, self.watermark):
            headers[Header.WATERMARK.value] = carried
        return headers | (cache_header(self.request) if cached else {Header.CACHE.value: BYPASS})

    async def _may_wait_again(self, error: TtsError) -> bool:
        """Overtaken by an unload before any audio left: wait (on events) for the reload within ``wait_ms``."""
        actor = self.route.actor
        remaining = self.request.wait_ms / 1000 - (time.perf_counter() - self.started)
        if error.code is not ErrorCode.BACKEND_NOT_READY or actor.stopping or remaining <= 0 or self.messages:
            return False
        await wait_ready(actor, remaining)
        if not actor.ready:
            raise self.pipeline.registry.no_backend_ready(self.request, actor) from None
        return True

    def _done(self, encoder: SpeechEncoder, segments: int, synth_seconds: float) -> None:
        name, request, audio_s = self.route.actor.name, self.request, encoder.audio_seconds
        trace.get_current_span().set_attribute("tts.audio_seconds", audio_s)
        metrics.REQUESTS.labels(name, "ok").inc()
        metrics.SYNTHESIS_SECONDS.labels(name).observe(synth_seconds)
        metrics.AUDIO_SECONDS.labels(name).inc(audio_s)
        assert self.reply is not None
        log.info(
            "synthesized",
            backend=name,
            voice=self.route.voice.id,
            chars=len(request.text),
            segments=segments,
            format=request.format.value,
            stream=request.stream,
            audio_s=round(audio_s, 3),
            synth_s=round(synth_seconds, 3),
            first_audio_s=round(self.reply.first_audio_s or 0.0, 3),
            total_s=round(time.perf_counter() - self.started, 3),
            fallback_from=self.route.fallback_from,
            watermark=self.watermark,
        )
