"""The ``tts.synthesize`` endpoint: parse, admit, route, then forward or hand over to the pipeline.

Every decision here is made at once, from the current state; the audio is made in a task of its own
(:mod:`tts_actor.synthesis.pipeline`), so the endpoint is free for the next request meanwhile. What is
NATS about a synthesis stays here: the reply subject, the request's headers (id, heartbeat, trace),
the hop to another instance, and the error replies of requests refused before any work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import time
from collections.abc import Coroutine
from typing import Any

from nats.aio.client import Client
from nats.micro.request import Request
from opentelemetry.trace import SpanKind, Status, StatusCode

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet.audit import SYNTHESIZE, AuditTrail
from tts_actor.fleet.routing import Forward, InterestRouter
from tts_actor.lifecycle import refusals
from tts_actor.lifecycle.jobs import JobControl
from tts_actor.lifecycle.registry import Registry, Route
from tts_actor.nats_edge.callers import audit_actor
from tts_actor.nats_edge.respond import publisher, respond_error
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import extract_context, tracer
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.wire.deadlines import LateRequest, now_epoch_ms, remaining_budget_ms
from tts_actor.wire.framing import echoed_request_id
from tts_actor.wire.headers import Header
from tts_actor.wire.heartbeat import Heartbeat, ReplyLost, requested_interval_ms
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.request_parsing import parse_synthesis_request
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
SEND_ELSEWHERE = (ErrorCode.DEADLINE_UNREACHABLE, ErrorCode.BUSY)  # refusals that carry the fleet's view
BUSY_RETRY_MS = 250  # a forwarded request's busy: the backend's pace is another instance's to know


class SynthesizeEndpoint:
    """``tts.synthesize`` (and the per-backend subjects the router follows): one task per admitted request."""

    def __init__(
        self,
        nc: Client,
        registry: Registry,
        settings: Settings,
        pipeline: SynthesisPipeline,
        audit: AuditTrail | None = None,
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.pipeline = pipeline
        self.audit = audit
        self.synthesize_subject = Subjects.of(settings).synthesize
        self.inflight: set[asyncio.Task[None]] = set()
        self.routing = InterestRouter(nc, registry, settings, self.handle)

    async def handle(self, req: Request) -> None:
        """Validate and route at once; the audio is made in a task of its own."""
        started = time.perf_counter()
        if not req._msg.reply:  # a publish, not a request: nobody would hear the audio
            metrics.REQUESTS.labels("-", "no_reply_subject").inc()
            log.warning("synthesize_dropped", why="no reply subject", fix="send it as a request (nats req)")
            return
        request: SynthesisRequest | None = None
        try:
            request = parse_synthesis_request(req.data, self.settings)
            request = self._with_callers_budget(req, request)  # a stream refused late still gets its end message
            requested_interval_ms(req.headers)  # checked here; _serve's Heartbeat uses it
            route = self.routing.decide(request, req.headers)
            if len(self.inflight) >= self.settings.max_inflight:
                # paced by the backend's measured job time, so a burst's callers come back staggered
                pace = route.actor.retry_after_ms() if isinstance(route, Route) else BUSY_RETRY_MS
                raise refusals.inflight_full(len(self.inflight), self.settings.max_inflight, pace)
            if isinstance(route, Forward):  # loaded on another instance, or maybe: the hop decides
                self._audit_clone(req, request, None)
                self._track(self._forward(req, request, route, started))
                return
            route.actor.demand()  # unloaded on purpose: this request brings it back
            if not route.actor.ready and not (request.wait_ms and route.actor.pending):
                raise self.routing.nobody_has(request, route.actor.name, route.actor)
        except LateRequest as late:  # the caller gave up before this arrived (a buffer flushed after an outage)
            metrics.DROPPED_LATE.labels("-").inc()
            metrics.REQUESTS.labels("-", late.code.value).inc()
            log.info("synthesize_dropped_late", request_id=echoed_request_id(req.headers), **(late.detail or {}))
            await respond_error(req, late, self.nc.max_payload, stream=request is not None and request.stream)
            return
        except TtsError as error:
            metrics.REQUESTS.labels(error.backend or "-", error.code.value).inc()
            log.info(
                "synthesize_rejected",
                code=error.code.value,
                backend=error.backend,
                state=error.state,
                ms=round((time.perf_counter() - started) * 1000, 3),
            )
            await respond_error(req, error, self.nc.max_payload, stream=request is not None and request.stream)
            return
        self._track(self._serve(req, request, route, started, audit=True))

    def _audit_clone(self, req: Request, request: SynthesisRequest, route: Route | None) -> None:
        """A synthesis with a cloned voice is an audit event, written by the instance the caller reached (once).

        Served here (``route``): recorded once the run is over, when the voice profile was found (``request`` as
        the run resolved it); an unknown or deleted id is refused, not used. Forwarded (None): recorded when the
        profile exists as it is sent on.
        """
        if self.audit is None or (request.voice_profile is None and request.reference_audio is None):
            return
        if req.subject != self.synthesize_subject:
            return  # came over the hop (only the service may publish there): the forwarding instance recorded it
        only_if = None
        if request.voice_profile is not None:
            voice_id = request.voice_profile
            if route is not None and request.reference_digest is None:
                return  # the run never found the profile
            store = self.pipeline.store
            if route is None and store is not None:
                only_if = functools.partial(store.profiles.exists, voice_id)
        else:  # a clip sent inline: named by its digest, like the audio cache does
            voice_id = "clip:" + hashlib.sha256(request.reference_audio or b"").hexdigest()[:32]
        self.audit.record_soon(
            SYNTHESIZE,
            audit_actor(req._msg.reply, req.headers),
            voice_id,
            only_if=only_if,
            backend=route.actor.name if route is not None else None,
            forwarded=route is None,
            language=request.language,
        )

    def _with_callers_budget(self, req: Request, request: SynthesisRequest) -> SynthesisRequest:
        """``deadline_ms`` as what the caller still waits from now (its ``Tts-Deadline``, ``Tts-Sent-At``).

        A request buffered through an outage looks fresh by ``deadline_ms`` alone; raises :class:`LateRequest`
        when nobody waits for it any more.
        """
        budget = remaining_budget_ms(req.headers, request.deadline_ms, now_epoch_ms(), self.settings.clock_skew_ms)
        return request if budget == request.deadline_ms else dataclasses.replace(request, deadline_ms=budget)

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _forward(self, req: Request, request: SynthesisRequest, forward: Forward, started: float) -> None:
        """Through the hop; when no instance has the backend loaded, served here if it can be, else the error."""
        try:
            if await self.routing.forward(req, request, forward):
                return
            route = self.routing.after_no_responders(request, forward)
        except TtsError as error:
            metrics.REQUESTS.labels(error.backend or "-", error.code.value).inc()
            await respond_error(req, error, self.nc.max_payload, stream=request.stream)
            return
        except Exception as exc:  # never leave a caller without an answer
            log.exception("forward_crashed")
            error = TtsError(ErrorCode.INTERNAL, f"forward failed: {type(exc).__name__}", "See the service log.")
            await respond_error(req, error, self.nc.max_payload, stream=request.stream)
            return
        await self._serve(req, request, route, started)

    async def _serve(
        self, req: Request, request: SynthesisRequest, route: Route, started: float, audit: bool = False
    ) -> None:
        """The pipeline's run inside this request's span, with its ack and heartbeats; every error answered.

        ``audit``: record a cloned voice's use when the run is over (not when the forwarding instance did).
        """
        metrics.INFLIGHT.inc()
        attributes = {
            "tts.backend": route.actor.name,
            "tts.voice": route.voice.id,
            "tts.language": request.language,
            "tts.text_chars": len(request.text),
            "tts.format": request.format.value,
            "tts.stream": request.stream,
        }
        control = JobControl(
            self.pipeline.request_id((req.headers or {}).get(Header.REQUEST_ID.value)), deadline_ms=request.deadline_ms
        )
        if request.deadline_ms is not None:
            control.deadline = time.monotonic() - (time.perf_counter() - started) + request.deadline_ms / 1000
        beat = Heartbeat(publisher(req), requested_interval_ms(req.headers), control.request_id)
        await beat.start()  # the ack, before anything else on the reply subject
        run = self.pipeline.run(
            request, route, control, beat.publisher(publisher(req)), self.nc.max_payload, started=started
        )
        with tracer().start_as_current_span(
            "tts.synthesize", context=extract_context(req.headers), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            span.set_attribute("tts.request_id", control.request_id)
            try:
                await run.serve()
            except ReplyLost as lost:  # NATS went away mid-reply: the caller's stall timer tells it
                log.warning("reply_lost", request_id=control.request_id, error=str(lost), sent=run.messages)
                metrics.REQUESTS.labels(route.actor.name, "reply_lost").inc()
            except TtsError as error:
                if error.code in SEND_ELSEWHERE:
                    self.routing.with_fleet_view(error)
                span.set_status(Status(StatusCode.ERROR, error.message))
                metrics.REQUESTS.labels(error.backend or route.actor.name, error.code.value).inc()
                await run.fail(error)
            except asyncio.CancelledError:  # shutdown: still answer, then stop
                await run.fail(route.actor.shutting_down_error())
                raise
            except Exception as exc:  # never leave a caller without an answer
                log.exception("synthesize_crashed")
                span.record_exception(exc)
                error = TtsError(
                    ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", "Report this with the service log."
                )
                await run.fail(error)
            finally:
                beat.stop()
                if audit:
                    self._audit_clone(req, run.request, route)
                metrics.INFLIGHT.dec()
