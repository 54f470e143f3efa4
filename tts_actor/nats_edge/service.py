"""The NATS edge: a ``nats.micro`` service named ``tts`` and its endpoints.

Endpoints answer from the current state at once. A synthesis that can run is
cut into segments (:mod:`tts_actor.audio.segmenter`) and handed to the backend's actor in a
task of its own, so the endpoint is free for the next request while audio is being
made; each segment's audio is encoded and sent by :class:`tts_actor.wire.replies.ReplyWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from tts_actor import __version__
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment, segment_text
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet.routing import Forward, InterestRouter
from tts_actor.fleet.view import fleet_status
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.jobs import JobControl, SynthesisJob
from tts_actor.lifecycle.registry import Registry, Route
from tts_actor.nats_edge.stats import endpoint_data
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import extract_context, tracer
from tts_actor.synthesis.cached import CachedSynthesis
from tts_actor.synthesis.profiles import ProfileStore, parse_create_request, parse_profile_id
from tts_actor.wire.heartbeat import Heartbeat, ReplyLost, requested_interval_ms
from tts_actor.wire.messages import NAME_RE, Header, SynthesisRequest, parse_synthesis_request
from tts_actor.wire.replies import (
    Publish,
    ReplyWriter,
    SegmentAudio,
    as_they_come,
    echoed_request_id,
    error_body,
    error_headers,
    stream_end,
)
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
HEADER_ROOM = 8 * 1024  # bytes kept free in an error reply for headers
FLEET_READ_TIMEOUT_S = 2.0
__all__ = ["HEADER_ROOM", "TtsService", "error_headers"]


class QueuedSink:
    """The job's sink: each segment's audio queued for the reply writer.

    With ``first_waits`` (a stream of several segments) the first segment is taken only once it is sent, so that its
    encoding does not share the CPU with the second segment's synthesis: first audio is what a streaming caller waits
    for. The audio is queued before any wait, so a runner that stops waiting loses nothing.
    """

    def __init__(self, first_waits: bool) -> None:
        self.queue: asyncio.Queue[SegmentAudio] = asyncio.Queue()
        self.first_out = asyncio.Event()
        self._first_waits = first_waits

    async def accept(self, segment: Segment, audio: Audio) -> None:
        self.queue.put_nowait(SegmentAudio(segment, audio))
        if segment.index == 0 and self._first_waits:
            await self.first_out.wait()


class TtsService:
    """Registers the endpoints and serves them from a :class:`Registry`."""

    def __init__(self, nc: Client, registry: Registry, settings: Settings) -> None:
        self.nc = nc
        self.registry = registry
        self.settings = settings
        self.subjects = Subjects.of(settings)
        self._service: Service | None = None
        self._control_subs: list[Any] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._control_tasks: set[asyncio.Task[None]] = set()
        self.profiles = ProfileStore(nc, settings)
        self.cached = CachedSynthesis(nc, settings, self.profiles)  # profiles in, the audio cache around
        self._jobs: dict[str, SynthesisJob] = {}  # by request id, for tts.cancel
        self.routing = InterestRouter(nc, registry, settings, self._on_synthesize)

    async def start(self) -> None:
        s = self.settings
        self._service = await add_service(
            self.nc,
            ServiceConfig(
                name="tts",
                version=__version__,
                description="Text-to-speech over NATS: tts.synthesize, tts.status, tts.voices, tts.health",
                metadata={"instance": s.instance, "backends": ",".join(s.backends)},
                queue_group=s.queue_group,
                stats_handler=lambda _endpoint: endpoint_data(self.registry, len(self._inflight)),
            ),
        )
        handlers = {
            "synthesize": self._on_synthesize,
            "status": self._on_status,
            "voices": self._on_voices,
            "health": self._on_health,
            "voices_create": self._on_voice_create,
            "voices_delete": self._on_voice_delete,
        }
        for name, subject in self.subjects.endpoints():
            await self._service.add_endpoint(
                EndpointConfig(name=name, subject=subject, handler=handlers[name], queue_group=s.queue_group)
            )
        # control goes to every instance (no queue group): each one retries its own backend
        self._control_subs.append(await self.nc.subscribe(self.subjects.control(), cb=self._on_control))
        # cancel reaches every instance too: the one serving the request acts
        self._control_subs.append(await self.nc.subscribe(self.subjects.cancel, cb=self._on_cancel))
        await self.routing.start()  # tts.backend.<name>.synthesize while <name> is loaded here
        await self.nc.flush()  # the server has every subscription before we call ourselves ready
        log.info("service_started", instance=s.instance, subjects=f"{s.subject_prefix}.>")

    async def stop(self, deadline: float | None = None) -> None:
        """Stop taking requests; syntheses in flight may answer until ``deadline`` (monotonic), then get an error.

        Each step is guarded: on a broken connection unsubscribing can fail, and the rest must still run.
        """
        if deadline is None:
            deadline = time.monotonic() + self.settings.shutdown_grace_s
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.routing.stop(), 5.0)
        for sub in self._control_subs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 2.0)
        for task in list(self._control_tasks):
            task.cancel()
        await asyncio.gather(*self._control_tasks, return_exceptions=True)
        if self._service is not None:
            try:
                await asyncio.wait_for(self._service.stop(), 2.0)
            except Exception as exc:
                log.warning("service_stop_incomplete", error=repr(exc))
        if self._inflight:  # let running syntheses answer, within a bound; the rest get an error reply
            _, late = await asyncio.wait(self._inflight, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.cached.drain()  # audio already answered, still being stored: a bounded wait

    # --- small endpoints ---------------------------------------------------
    async def _reply_json(self, req: Request, body: dict[str, Any]) -> None:
        await req.respond(json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    async def _on_status(self, req: Request) -> None:
        status = self.registry.status()
        status["fleet"] = await self._fleet(status)
        await self._reply_json(req, status)

    async def _fleet(self, local: dict[str, Any]) -> dict[str, Any]:
        """Every instance's backends from the fleet watch's live copy; this instance's own, when the KV is away."""
        watch = self.routing.fleet
        if not watch.synced and watch.error is None:  # just started: the watch is reading the bucket
            await watch.wait_until(lambda: watch.synced or watch.error is not None, FLEET_READ_TIMEOUT_S)
        if not watch.synced or watch.error is not None:
            log.warning("fleet_unavailable", error=watch.error or "the state KV was not read in time")
            return {**fleet_status({}, local), "error": f"other instances unknown: {watch.error or 'TimeoutError'}"}
        return fleet_status(watch.fleet(), local)

    async def _on_voices(self, req: Request) -> None:
        await self._reply_json(req, self.registry.voices())

    async def _on_voice_create(self, req: Request) -> None:
        """Store a reference clip as a voice profile; the answer is its opaque id."""
        try:
            profile = await self.profiles.create(parse_create_request(req.data, self.settings))
        except TtsError as error:
            await self._respond_error(req, error)
            return
        await self._reply_json(req, profile.public())

    async def _on_voice_delete(self, req: Request) -> None:
        try:
            deleted = await self.profiles.delete(parse_profile_id(req.data))
        except TtsError as error:
            await self._respond_error(req, error)
            return
        await self._reply_json(req, {"deleted": deleted})

    async def _on_health(self, req: Request) -> None:
        await self._reply_json(req, self.registry.health())

    async def _on_control(self, msg: Msg) -> None:
        """Each command in a task of its own: an unload waiting for a long synthesis blocks no other."""
        task = asyncio.create_task(self._control(msg))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _control(self, msg: Msg) -> None:
        _, backend, action = msg.subject.rsplit(".", 2)
        try:
            actor = self.registry.get(backend)
            if action == "retry":
                actor.retry()
                result: dict[str, Any] = {"ok": True, "state": actor.state.value, "pending": actor.pending}
            elif action == "unload":
                unloading = actor.request_unload()
                if unloading is not None and actor.busy:  # the engine is speaking: say so now, not in 5 s
                    result = {"ok": True, "state": actor.state.value, "pending": True}
                    result["message"] = "unloading after the current synthesis; new requests wait or go elsewhere"
                else:
                    unloaded = unloading is not None and await unloading
                    result = {"ok": unloaded, "state": actor.state.value}
            else:
                raise TtsError(
                    ErrorCode.INVALID_REQUEST,
                    f"unknown control action {action!r}",
                    "Use tts.control.<backend>.retry or tts.control.<backend>.unload.",
                )
        except TtsError as error:
            await self._reply_control_error(msg, error)
            return
        except asyncio.CancelledError:  # shutdown: still answer
            await self._reply_control_error(
                msg, TtsError(ErrorCode.INTERNAL, "instance shutting down", "Send it again; another instance may act.")
            )
            raise
        except Exception as exc:  # never leave a control caller without an answer
            log.exception("control_failed", backend=backend, action=action)
            await self._reply_control_error(
                msg, TtsError(ErrorCode.INTERNAL, f"{action} failed: {type(exc).__name__}", "See the service log.")
            )
            return
        result["instance"] = self.settings.instance
        result["backend"] = backend
        log.info("control", backend=backend, action=action, **{k: v for k, v in result.items() if k != "backend"})
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(result).encode())

    async def _on_cancel(self, msg: Msg) -> None:
        """``{"request_id": ...}``: stop that request now; its engine stops at the next segment."""
        try:
            request_id = json.loads(msg.data).get("request_id")
        except (ValueError, AttributeError):
            request_id = None
        job = self._jobs.get(request_id) if isinstance(request_id, str) else None
        if job is None:
            return  # another instance's request, or already done: only the one serving it answers
        job.control.cancelled = True
        stop = job.control.stop_error()
        if stop is not None and not job.future.done():
            job.future.set_exception(stop)
        log.info("synthesis_cancelled", request_id=request_id)
        if msg.reply:
            body = {"ok": True, "request_id": request_id, "instance": self.settings.instance}
            await self.nc.publish(msg.reply, json.dumps(body).encode())

    async def _reply_control_error(self, msg: Msg, error: TtsError) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, json.dumps(error.to_dict()).encode(), headers=error_headers(error))

    # --- synthesis -----------------------------------------------------------
    async def _on_synthesize(self, req: Request) -> None:
        """Validate and route at once; the audio is made in a task of its own."""
        started = time.perf_counter()
        if not req._msg.reply:  # a publish, not a request: nobody would hear the audio
            metrics.REQUESTS.labels("-", "no_reply_subject").inc()
            log.warning("synthesize_dropped", why="no reply subject", fix="send it as a request (nats req)")
            return
        request: SynthesisRequest | None = None
        try:
            request = parse_synthesis_request(req.data, self.settings)
            requested_interval_ms(req.headers)  # checked here; _serve's Heartbeat uses it
            route = self.routing.decide(request, req.headers)
            if len(self._inflight) >= self.settings.max_inflight:
                raise TtsError(
                    ErrorCode.BUSY,
                    f"{len(self._inflight)} requests in flight (TTS_MAX_INFLIGHT={self.settings.max_inflight})",
                    "Retry after retry_after_ms, or add instances (they share the queue group).",
                    retry_after_ms=250,
                )
            if isinstance(route, Forward):  # loaded on another instance, or maybe: the hop decides
                self._track(self._forward(req, request, route, started))
                return
            route.actor.demand()  # unloaded on purpose: this request brings it back
            if not route.actor.ready and not (request.wait_ms and route.actor.pending):
                raise self.routing.nobody_has(request, route.actor.name, route.actor)
        except TtsError as error:
            metrics.REQUESTS.labels(error.backend or "-", error.code.value).inc()
            log.info(
                "synthesize_rejected",
                code=error.code.value,
                backend=error.backend,
                state=error.state,
                ms=round((time.perf_counter() - started) * 1000, 3),
            )
            await self._respond_error(req, error, stream=request is not None and request.stream)
            return
        self._track(self._serve(req, request, route, started))

    def _track(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _forward(self, req: Request, request: SynthesisRequest, forward: Forward, started: float) -> None:
        """Through the hop; when no instance has the backend loaded, served here if it can be, else the error."""
        try:
            if await self.routing.forward(req, request, forward):
                return
            route = self.routing.after_no_responders(request, forward)
        except TtsError as error:
            metrics.REQUESTS.labels(error.backend or "-", error.code.value).inc()
            await self._respond_error(req, error, stream=request.stream)
            return
        except Exception as exc:  # never leave a caller without an answer
            log.exception("forward_crashed")
            error = TtsError(ErrorCode.INTERNAL, f"forward failed: {type(exc).__name__}", "See the service log.")
            await self._respond_error(req, error, stream=request.stream)
            return
        await self._serve(req, request, route, started)

    def _request_id(self, req: Request) -> str:
        """The caller's ``Tts-Request-Id`` when it is a usable, unused name, else a fresh one."""
        wanted = (req.headers or {}).get(Header.REQUEST_ID.value, "")
        if NAME_RE.match(wanted) and wanted not in self._jobs:
            return wanted
        return uuid.uuid4().hex

    async def _serve(self, req: Request, request: SynthesisRequest, route: Route, started: float) -> None:
        metrics.INFLIGHT.inc()
        ctx = extract_context(req.headers)
        attributes = {
            "tts.backend": route.actor.name,
            "tts.voice": route.voice.id,
            "tts.language": request.language,
            "tts.text_chars": len(request.text),
            "tts.format": request.format.value,
            "tts.stream": request.stream,
        }
        control = JobControl(self._request_id(req), deadline_ms=request.deadline_ms)
        if request.deadline_ms is not None:
            control.deadline = time.monotonic() - (time.perf_counter() - started) + request.deadline_ms / 1000
        beat = Heartbeat(self._publisher(req), requested_interval_ms(req.headers), control.request_id)
        await beat.start()  # the ack, before anything else on the reply subject
        job: SynthesisJob | None = None
        writer: ReplyWriter | None = None
        with tracer().start_as_current_span(
            "tts.synthesize", context=ctx, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            span.set_attribute("tts.request_id", control.request_id)
            try:
                if not route.actor.ready:
                    await self._wait_ready(route.actor, request.wait_ms / 1000)
                    route = self.registry.route(request)
                    if not route.actor.ready:
                        raise self.registry.no_backend_ready(request, route.actor)
                request = await self.cached.with_profile(request)
                cache_key = self.cached.key(request, route)
                cached = await self.cached.lookup(request, cache_key, span)
                if cached is not None:  # answered without a backend
                    await self.cached.answer(
                        beat.publisher(self._publisher(req)), cached, request, route, control.request_id, started
                    )
                    metrics.REQUESTS.labels(route.actor.name, "ok").inc()
                    log.info("synthesized", backend=route.actor.name, cache="hit", bytes=len(cached.data))
                    return
                spec = route.actor.adapter.spec
                segments = segment_text(request.text, spec.max_segment_chars, spec.min_segment_chars, request.language)
                span.set_attribute("tts.segments", len(segments))
                writer = self._writer(
                    beat.publisher(self._publisher(req)), request, route, control, len(segments), started
                )
                recorder = self.cached.record(writer, request, cache_key)
                sink = QueuedSink(first_waits=request.stream and len(segments) > 1)
                synth_started = time.perf_counter()
                while True:  # a job that an unload overtook in the queue waits out the rest of its wait_ms
                    job = SynthesisJob(
                        request,
                        route.voice,
                        segments,
                        sink,
                        control,
                        asyncio.get_running_loop().create_future(),
                        otel_context.get_current(),
                    )
                    self._jobs[control.request_id] = job
                    try:
                        route.actor.submit(job)
                        async for item in as_they_come(sink.queue, job.future):
                            await writer.add(item.segment, item.audio)
                            sink.first_out.set()
                        break
                    except TtsError as error:
                        if not await self._may_wait_again(error, request, route, writer, started):
                            raise
                synth_seconds = time.perf_counter() - synth_started
                await writer.finish()
                self.cached.store_later(recorder)  # in the background: the reply is out already
                span.set_attribute("tts.audio_seconds", writer.audio_seconds)
            except ReplyLost as lost:  # NATS went away mid-reply: the caller's stall timer tells it
                log.warning(
                    "reply_lost", request_id=control.request_id, error=str(lost), sent=writer and writer.messages
                )
                metrics.REQUESTS.labels(route.actor.name, "reply_lost").inc()
                return
            except TtsError as error:
                span.set_status(Status(StatusCode.ERROR, error.message))
                metrics.REQUESTS.labels(error.backend or route.actor.name, error.code.value).inc()
                await self._fail(req, request.stream, writer, error)
                return
            except asyncio.CancelledError:  # shutdown: still answer, then stop
                await self._fail(req, request.stream, writer, route.actor.shutting_down_error())
                raise
            except Exception as exc:  # never leave a caller without an answer
                log.exception("synthesize_crashed")
                span.record_exception(exc)
                error = TtsError(
                    ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", "Report this with the service log."
                )
                await self._fail(req, request.stream, writer, error)
                return
            finally:
                beat.stop()
                metrics.INFLIGHT.dec()
                self._jobs.pop(control.request_id, None)
                if job is not None and not job.future.done():  # nobody waits for the rest: free the backend
                    job.control.cancelled = True
                    job.future.cancel()
        metrics.REQUESTS.labels(route.actor.name, "ok").inc()
        metrics.SYNTHESIS_SECONDS.labels(route.actor.name).observe(synth_seconds)
        metrics.AUDIO_SECONDS.labels(route.actor.name).inc(writer.audio_seconds)
        log.info(
            "synthesized",
            backend=route.actor.name,
            voice=route.voice.id,
            chars=len(request.text),
            segments=len(segments),
            format=request.format.value,
            stream=request.stream,
            audio_s=round(writer.audio_seconds, 3),
            synth_s=round(synth_seconds, 3),
            first_audio_s=round(writer.first_audio_s or 0.0, 3),
            total_s=round(time.perf_counter() - started, 3),
            fallback_from=route.fallback_from,
        )

    async def _may_wait_again(
        self, error: TtsError, request: SynthesisRequest, route: Route, writer: ReplyWriter, started: float
    ) -> bool:
        """Overtaken by an unload before any audio left: wait (on events) for the reload within ``wait_ms``."""
        actor = route.actor
        remaining = request.wait_ms / 1000 - (time.perf_counter() - started)
        if error.code is not ErrorCode.BACKEND_NOT_READY or actor.stopping or remaining <= 0 or writer.messages:
            return False
        await self._wait_ready(actor, remaining)
        if not actor.ready:
            raise self.registry.no_backend_ready(request, actor) from None
        return True

    @staticmethod
    def _publisher(req: Request) -> Publish:
        async def publish(data: bytes, message_headers: dict[str, str]) -> None:
            await req.respond(data, headers=message_headers)

        return publish

    def _writer(
        self,
        publish: Publish,
        request: SynthesisRequest,
        route: Route,
        control: JobControl,
        segments: int,
        started: float,
    ) -> ReplyWriter:
        headers = {
            Header.BACKEND.value: route.actor.name,
            Header.VOICE.value: route.voice.id,
            Header.LANGUAGE.value: request.language,
            Header.REQUEST_ID.value: control.request_id,
        }
        if route.fallback_from:
            headers[Header.FALLBACK_FROM.value] = route.fallback_from
        return ReplyWriter(
            publish,
            request,
            headers,
            self.nc.max_payload,
            self.settings.segment_silence_ms,
            segments,
            started,
            route.actor.name,
        )

    async def _fail(self, req: Request, stream: bool, writer: ReplyWriter | None, error: TtsError) -> None:
        """The error reply; a stream gets it, then its end message."""
        if writer is None:
            await self._respond_error(req, error, stream=stream)
            return
        try:
            await writer.fail(error)
        except Exception as exc:  # no reply subject, or the connection went away
            log.warning("reply_failed", error=repr(exc))

    @staticmethod
    async def _wait_ready(actor: BackendActor, bound_s: float) -> None:
        """Up to ``bound_s``, on events: through an unload in progress, the reload it needs, the load."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound_s
        while not actor.ready and not actor.stopping and (remaining := deadline - loop.time()) > 0:
            actor.demand()
            if not actor.pending:
                return  # failed, or missing with nothing under way: waiting would change nothing
            await actor.wait_settled(remaining)

    async def _respond_error(self, req: Request, error: TtsError, stream: bool = False) -> None:
        """The structured error; a stream request then gets its (empty) end message too."""
        request_id = echoed_request_id(req.headers)
        body, headers = error_body(error, self.nc.max_payload - HEADER_ROOM, request_id)
        try:
            await req.respond(body, headers=headers)
            if stream:
                await req.respond(b"", headers=stream_end(request_id))
        except Exception as exc:  # no reply subject, or the connection went away
            log.warning("reply_failed", error=repr(exc))
