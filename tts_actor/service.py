"""The NATS edge: a ``nats.micro`` service named ``tts`` and its endpoints.

Endpoints answer from the current state at once. A synthesis that can run is
handed to the backend's actor in a task of its own, so the endpoint is free for
the next request while audio is being made. Audio larger than the server's max
payload goes back as several messages on the same reply subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from opentelemetry.trace import SpanKind, Status, StatusCode

from tts_actor import __version__, metrics
from tts_actor.actor import BackendActor
from tts_actor.audio import Audio
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet import fleet_status, read_fleet
from tts_actor.logs import get_logger
from tts_actor.messages import AudioFormat, Header, SynthesisRequest, parse_synthesis_request
from tts_actor.profiles import ProfileStore, parse_create_request, parse_profile_id
from tts_actor.registry import Registry, Route
from tts_actor.service_stats import endpoint_data
from tts_actor.telemetry import extract_context, tracer

log = get_logger(__name__)
HEADER_ROOM = 8 * 1024  # bytes kept free in each reply for headers
FLEET_READ_TIMEOUT_S = 2.0


def error_headers(error: TtsError) -> dict[str, str]:
    return {
        Header.SERVICE_ERROR_CODE.value: str(error.service_status),
        Header.SERVICE_ERROR.value: error.message[:512].replace("\r", " ").replace("\n", " "),
        Header.ERROR_CODE.value: error.code.value,
        Header.CONTENT_TYPE.value: "application/json",
    }


class TtsService:
    """Registers the endpoints and serves them from a :class:`Registry`."""

    def __init__(self, nc: Client, registry: Registry, settings: Settings) -> None:
        self.nc = nc
        self.registry = registry
        self.settings = settings
        self._service: Service | None = None
        self._control_subs: list[Any] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._control_tasks: set[asyncio.Task[None]] = set()
        self.profiles = ProfileStore(nc, settings)

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
        for name, handler in (
            ("synthesize", self._on_synthesize),
            ("status", self._on_status),
            ("voices", self._on_voices),
            ("health", self._on_health),
        ):
            await self._service.add_endpoint(
                EndpointConfig(name=name, subject=s.subject(name), handler=handler, queue_group=s.queue_group)
            )
        for name, subject, handler in (
            ("voices_create", s.subject("voices", "create"), self._on_voice_create),
            ("voices_delete", s.subject("voices", "delete"), self._on_voice_delete),
        ):
            await self._service.add_endpoint(
                EndpointConfig(name=name, subject=subject, handler=handler, queue_group=s.queue_group)
            )
        # control goes to every instance (no queue group): each one retries its own backend
        self._control_subs.append(await self.nc.subscribe(s.subject("control", "*", "*"), cb=self._on_control))
        await self.nc.flush()  # the server has every subscription before we call ourselves ready
        log.info("service_started", instance=s.instance, subjects=f"{s.subject_prefix}.>")

    async def stop(self, deadline: float | None = None) -> None:
        """Stop taking requests; syntheses in flight may answer until ``deadline`` (monotonic), then get an error.

        Each step is guarded: on a broken connection unsubscribing can fail, and the rest must still run.
        """
        if deadline is None:
            deadline = time.monotonic() + self.settings.shutdown_grace_s
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

    # --- small endpoints ---------------------------------------------------
    async def _reply_json(self, req: Request, body: dict[str, Any]) -> None:
        await req.respond(json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    async def _on_status(self, req: Request) -> None:
        status = self.registry.status()
        status["fleet"] = await self._fleet(status)
        await self._reply_json(req, status)

    async def _fleet(self, local: dict[str, Any]) -> dict[str, Any]:
        """Every instance's backends from the KV; this instance's own at least, when the KV cannot be read."""
        try:
            fleet = await asyncio.wait_for(read_fleet(self.nc, self.settings.kv_bucket), FLEET_READ_TIMEOUT_S)
        except Exception as exc:
            log.warning("fleet_unavailable", error=repr(exc))
            return {**fleet_status({}, local), "error": f"other instances unknown: {type(exc).__name__}"}
        return fleet_status(fleet, local)

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
        try:
            request = parse_synthesis_request(req.data, self.settings)
            route = self.registry.route(request)
            if len(self._inflight) >= self.settings.max_inflight:
                raise TtsError(
                    ErrorCode.BUSY,
                    f"{len(self._inflight)} requests in flight (TTS_MAX_INFLIGHT={self.settings.max_inflight})",
                    "Retry after retry_after_ms, or add instances (they share the queue group).",
                    retry_after_ms=250,
                )
            route.actor.demand()  # unloaded on purpose: this request brings it back
            if not route.actor.ready and not (request.wait_ms and route.actor.pending):
                raise self.registry.no_backend_ready(request, route.actor)
        except TtsError as error:
            metrics.REQUESTS.labels(error.backend or "-", error.code.value).inc()
            log.info(
                "synthesize_rejected",
                code=error.code.value,
                backend=error.backend,
                state=error.state,
                ms=round((time.perf_counter() - started) * 1000, 3),
            )
            await self._respond_error(req, error)
            return
        task = asyncio.create_task(self._serve(req, request, route, started))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _serve(self, req: Request, request: SynthesisRequest, route: Route, started: float) -> None:
        metrics.INFLIGHT.inc()
        ctx = extract_context(req.headers)
        attributes = {
            "tts.backend": route.actor.name,
            "tts.voice": route.voice.id,
            "tts.language": request.language,
            "tts.text_chars": len(request.text),
        }
        with tracer().start_as_current_span(
            "tts.synthesize", context=ctx, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                if not route.actor.ready:
                    await self._wait_ready(route.actor, request.wait_ms / 1000)
                    route = self.registry.route(request)
                    if not route.actor.ready:
                        raise self.registry.no_backend_ready(request, route.actor)
                synth_started = time.perf_counter()
                audio = await self._submit_within_wait(request, route, started)
                synth_seconds = time.perf_counter() - synth_started
                span.set_attribute("tts.audio_seconds", audio.duration_s)
                await self._respond_audio(req, request, route, audio)
            except TtsError as error:
                span.set_status(Status(StatusCode.ERROR, error.message))
                metrics.REQUESTS.labels(error.backend or route.actor.name, error.code.value).inc()
                await self._respond_error(req, error)
                return
            except asyncio.CancelledError:  # shutdown: still answer, then stop
                await self._respond_error(req, route.actor.shutting_down_error())
                raise
            except Exception as exc:  # never leave a caller without an answer
                log.exception("synthesize_crashed")
                span.record_exception(exc)
                error = TtsError(
                    ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", "Report this with the service log."
                )
                await self._respond_error(req, error)
                return
            finally:
                metrics.INFLIGHT.dec()
        metrics.REQUESTS.labels(route.actor.name, "ok").inc()
        metrics.SYNTHESIS_SECONDS.labels(route.actor.name).observe(synth_seconds)
        metrics.AUDIO_SECONDS.labels(route.actor.name).inc(audio.duration_s)
        log.info(
            "synthesized",
            backend=route.actor.name,
            voice=route.voice.id,
            chars=len(request.text),
            audio_s=round(audio.duration_s, 3),
            synth_s=round(synth_seconds, 3),
            total_s=round(time.perf_counter() - started, 3),
            fallback_from=route.fallback_from,
        )

    async def _submit_within_wait(self, request: SynthesisRequest, route: Route, started: float) -> Audio:
        """Synthesize; a job that an unload (or a failure) overtook in the queue waits out the rest of its wait_ms."""
        actor = route.actor
        while True:
            try:
                return await actor.submit(request, route.voice)
            except TtsError as error:
                remaining = request.wait_ms / 1000 - (time.perf_counter() - started)
                if error.code is not ErrorCode.BACKEND_NOT_READY or actor.stopping or remaining <= 0:
                    raise
                await self._wait_ready(actor, remaining)
                if not actor.ready:
                    raise self.registry.no_backend_ready(request, actor) from None

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

    async def _respond_error(self, req: Request, error: TtsError) -> None:
        body = json.dumps(error.to_dict()).encode()
        if len(body) > self.nc.max_payload - HEADER_ROOM:  # never let an error outgrow the reply
            error = dataclasses.replace(error, message=error.message[:500], detail=None)
            body = json.dumps(error.to_dict()).encode()
        try:
            await req.respond(body, headers=error_headers(error))
        except Exception as exc:  # no reply subject, or the connection went away
            log.warning("reply_failed", error=repr(exc))

    async def _respond_audio(self, req: Request, request: SynthesisRequest, route: Route, audio: Audio) -> None:
        body = audio.to_wav() if request.format is AudioFormat.WAV else audio.pcm
        headers = {
            Header.CONTENT_TYPE.value: request.format.content_type
            + ("" if request.format is AudioFormat.WAV else f";rate={audio.sample_rate};channels=1"),
            Header.BACKEND.value: route.actor.name,
            Header.VOICE.value: route.voice.id,
            Header.LANGUAGE.value: request.language,
            Header.SAMPLE_RATE.value: str(audio.sample_rate),
            Header.DURATION_MS.value: str(round(audio.duration_s * 1000)),
            Header.TOTAL_BYTES.value: str(len(body)),
        }
        if route.fallback_from:
            headers[Header.FALLBACK_FROM.value] = route.fallback_from
        chunk = max(1024, self.nc.max_payload - HEADER_ROOM)
        count = max(1, -(-len(body) // chunk))
        headers[Header.CHUNK_COUNT.value] = str(count)
        for index in range(count):
            part_headers = headers if index == 0 else {Header.CHUNK_COUNT.value: str(count)}
            part_headers = {**part_headers, Header.CHUNK_INDEX.value: str(index)}
            await req.respond(body[index * chunk : (index + 1) * chunk], headers=part_headers)
