"""Routing by interest: a backend's own subject is served only where it is loaded, and requests hop there.

Each instance subscribes ``<prefix>.backend.<name>.synthesize`` (queue group ``<group>-<name>``)
only while that backend is ready on it, reacting to the actor's changes (never a timer). A request
this instance cannot serve from its own ready backends is forwarded, once (``Tts-Forwarded-By``
marks it, and a forwarded request is never sent on), to that subject with a private inbox as its
reply subject; every message that comes back is relayed to the caller's reply subject until the
reply is complete, so streams pass through the hop. The relay is bounded: an instance that falls
silent ends it with a structured error. "No responders" there means no instance has the backend
loaded: the caller is answered at once, with the fleet's view of that backend.

Fallback routing (a request without ``backend``) takes the fleet's loaded backends into account
through :class:`~tts_actor.fleet.watch.FleetWatch`, a live copy of the state KV's per-instance entries:
a backend loaded on another instance beats one of ours that is not loaded, and when none of ours is
loaded anywhere, a backend this instance does not run but another has loaded (for the language) takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request
from opentelemetry.trace import SpanKind

from statemachine import State
from tts_actor.config import DEFAULT_BACKENDS, Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet.publisher import KV_WRITE_TIMEOUT_S
from tts_actor.fleet.watch import FleetWatch
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.lifecycle.registry import Registry, Route
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import extract_context, inject_headers, tracer
from tts_actor.wire.framing import HEADER_ROOM, echoed_request_id, end_headers, error_body
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.replies import ReplyKind, classify
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)

FORWARDED_BY = "Tts-Forwarded-By"  # on a forwarded request: the instance that sent it on (it is never sent on again)
FORWARDED_BACKEND = "Tts-Forwarded-Backend"  # the backend it was forwarded for
RELAY_SLACK_S = 10.0  # beyond the serving instance's own bounds, before a silent hop is given up
AFTER_ERROR_S = 2.0  # a stream's end message is expected this soon after its error
DECLINED = "declined"  # ``Tts-Status`` of the answer from an instance whose backend left ``loaded`` meanwhile
FORWARD_ATTEMPTS = 2  # a declined hop is tried once more (another instance may have it); still one hop


@dataclass(frozen=True)
class Forward:
    """Send the request to the instances that have ``backend`` loaded.

    ``local`` is this instance's own route for the request, decided with the forward (None: it does not run
    the backend): what it serves, or whose error it answers, when no instance answers the hop.
    """

    backend: str
    local: Route | None
    fallback_from: str | None = None

    @property
    def actor(self) -> BackendActor | None:
        """This instance's own actor for the request, if it has one."""
        return self.local.actor if self.local is not None else None


Decision = Route | Forward  # what :meth:`InterestRouter.decide` returns: decided once per request


class InterestRouter:
    """Per-backend subscriptions that follow the actors, the routing decision, and the forwarding hop."""

    def __init__(
        self, nc: Client, registry: Registry, settings: Settings, handler: Callable[[Request], Awaitable[None]]
    ) -> None:
        self.nc = nc
        self.registry = registry
        self.settings = settings
        self.subjects = Subjects.of(settings)
        # our own keep-alive re-puts our entries every fleet_ttl_s / 3: a watch silent longer than that is broken
        silence_s = settings.fleet_ttl_s + 2 * KV_WRITE_TIMEOUT_S
        self.fleet = FleetWatch(nc, settings.kv_bucket, own=settings.instance, silence_s=silence_s)
        self._handler = handler
        self._subs: dict[str, Subscription] = {}
        self._locks = {name: asyncio.Lock() for name in registry.actors}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.forwarded = 0  # requests this instance sent on and relayed an answer for

    def subject(self, backend: str) -> str:
        return self.subjects.backend_synthesize(backend)

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subs)

    # --- interest ------------------------------------------------------------
    async def start(self) -> None:
        self.fleet.start()
        for name, actor in self.registry.actors.items():
            actor.on_change(lambda name=name: self._changed(name))
            await self._sync(name)

    async def stop(self) -> None:
        """Drop every per-backend subscription (what was delivered is still served) and the fleet watch."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in list(self._subs):
            await self._sync(name)
        await self.fleet.stop()

    def _changed(self, name: str) -> None:
        """Called by the actor on each change that may alter ``ready``: follow it, now."""
        if (self.registry.actors[name].ready and not self._stopped) == (name in self._subs):
            return
        task = asyncio.ensure_future(self._sync(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Return once every subscribe or drain started so far has finished (tests, shutdown)."""
        while pending := set(self._tasks):
            await asyncio.gather(*pending, return_exceptions=True)

    async def _sync(self, name: str) -> None:
        """Subscribe while the backend is ready here, drain the subscription when it is not."""
        async with self._locks[name]:
            want = self.registry.actors[name].ready and not self._stopped
            sub = self._subs.get(name)
            try:
                if want and sub is None:

                    async def on_request(msg: Msg) -> None:
                        await self._on_backend_request(name, msg)

                    self._subs[name] = await self.nc.subscribe(
                        self.subject(name), queue=self.subjects.backend_queue(name), cb=on_request
                    )
                    await self.nc.flush(timeout=5)
                    log.info("backend_subject_subscribed", backend=name, subject=self.subject(name))
                elif not want and sub is not None:
                    del self._subs[name]
                    try:  # the server stops sending; what it sent already is still answered (or declined)
                        await asyncio.wait_for(sub.drain(), 5.0)
                    except Exception as exc:  # the drain's round trip failed: drop it all the same
                        log.warning("backend_subject_drain_failed", backend=name, error=repr(exc))
                        with contextlib.suppress(Exception):
                            await sub.unsubscribe()
                    log.info("backend_subject_dropped", backend=name, state=self.registry.actors[name].state.value)
            except Exception as exc:  # a broken connection: the reconnect restores subscriptions that remain
                log.warning("backend_subject_sync_failed", backend=name, error=repr(exc))

    async def _on_backend_request(self, backend: str, msg: Msg) -> None:
        if not self.registry.actors[backend].ready and msg.reply:  # delivered while the drain runs: send it back
            await self.nc.publish(msg.reply, b"", headers={Header.STATUS.value: DECLINED})
            return
        headers = dict(msg.headers or {})
        headers[FORWARDED_BACKEND] = backend  # the subject says which backend, whatever the headers claim
        headers.setdefault(FORWARDED_BY, "?")
        msg.headers = headers
        await self._handler(Request(msg))

    # --- deciding ------------------------------------------------------------
    def decide(self, request: SynthesisRequest, headers: dict[str, str] | None) -> Decision:
        """Served here when a ready backend of this instance fits; otherwise where the fleet has one loaded.

        One ``Registry.route`` call: a :class:`Forward` carries this instance's own route with it.
        """
        headers = headers or {}
        if headers.get(FORWARDED_BY):  # came over the hop: served here or refused, never sent on again
            pinned = headers.get(FORWARDED_BACKEND) or request.backend
            route = self.registry.route(dataclasses.replace(request, backend=pinned))
            return dataclasses.replace(route, fallback_from=headers.get(Header.FALLBACK_FROM.value))
        if request.backend:
            if request.backend not in self.registry.actors:  # not configured here: another instance may run it
                return Forward(request.backend, None)
            route = self.registry.route(request)  # language, voice and cloning are checked here already
            return route if route.actor.ready else Forward(request.backend, route)
        route = self.registry.route(request, self.fleet.loaded_elsewhere())
        if route.local is not None:  # a backend this instance runs is loaded on another one
            return Forward(route.actor.name, route.local, route.fallback_from)
        if route.actor.ready:
            return route
        other = self._loaded_only_elsewhere(request)
        if other is not None:  # nothing of ours is loaded anywhere: a backend we do not run is, elsewhere
            return Forward(other, route, route.fallback_from or route.actor.name)
        return route  # loaded nowhere: today's answer (wait_ms, or the error)

    def _loaded_only_elsewhere(self, request: SynthesisRequest) -> str | None:
        """A backend this instance does not run, loaded on another that speaks the language; by priority.

        A request naming a voice or cloning one stays here: only this instance's backends are known to offer it.
        """
        if request.voice or request.clones:
            return None
        loaded = self.fleet.loaded_elsewhere_for(request.language) - set(self.registry.actors)
        order = (*self.settings.language_priority.get(request.language, ()), *DEFAULT_BACKENDS)
        return next((name for name in order if name in loaded), min(loaded, default=None))

    def after_no_responders(self, request: SynthesisRequest, forward: Forward) -> Route:
        """No instance has it loaded: this one serves it if it can now (or within ``wait_ms``), else the error."""
        route = forward.local
        if route is None:
            raise self.nobody_has(request, forward.backend, None)
        route.actor.demand()
        if not route.actor.ready and not (request.wait_ms and route.actor.pending):
            raise self.nobody_has(request, route.actor.name, route.actor)
        return route

    def nobody_has(self, request: SynthesisRequest, backend: str, actor: BackendActor | None) -> TtsError:
        """Today's ``backend_not_ready``/``backend_failed``, with the fleet's view of the backend in ``detail``."""
        view = self.fleet.view(backend)
        if actor is not None:
            error = self.registry.no_backend_ready(request, actor)
            view["here"] = {"instance": self.settings.instance, "state": actor.state.value}
        else:
            error = fleet_refusal(backend, view) or self.registry.get_error(backend)
        error.detail = {**(error.detail or {}), "fleet": view}
        return error

    def with_fleet_view(self, error: TtsError) -> TtsError:
        """A refusal that sends the caller elsewhere (``deadline_unreachable``, ``busy``) with the fleet's view.

        Where the backend is loaded on other instances, the caller's retry (which any instance may take) or
        its own routing can go there.
        """
        if error.backend is not None:
            view = self.fleet.view(error.backend)
            view["here"] = {"instance": self.settings.instance}
            error.detail = {**(error.detail or {}), "fleet": view}
        return error

    # --- the hop ---------------------------------------------------------------
    async def forward(self, req: Request, request: SynthesisRequest, forward: Forward) -> bool:
        """Send it on and relay the reply; False when no instance has the backend loaded (nothing was sent back)."""
        reply = req._msg.reply
        headers = dict(req.headers or {})
        attributes = {"tts.backend": forward.backend, "tts.stream": request.stream}
        with tracer().start_as_current_span(
            "tts.forward", context=extract_context(headers), kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            headers = inject_headers(headers)
            headers[FORWARDED_BY] = self.settings.instance
            headers[FORWARDED_BACKEND] = forward.backend
            if forward.fallback_from:
                headers[Header.FALLBACK_FROM.value] = forward.fallback_from
            answered: bool | None = None
            for _ in range(FORWARD_ATTEMPTS):
                inbox = self.nc.new_inbox()
                sub = await self.nc.subscribe(inbox)
                try:
                    await self.nc.publish(self.subject(forward.backend), req.data, reply=inbox, headers=headers)
                    answered = await self._relay(sub, reply, request, echoed_request_id(req.headers))
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                if answered is not None:
                    break
            answered = bool(answered)
            span.set_attribute("tts.forward.answered", answered)
        self.forwarded += answered
        log.info("synthesize_forwarded", backend=forward.backend, answered=answered, stream=request.stream)
        return answered

    def _silence_bound_s(self, request: SynthesisRequest) -> float:
        """How long the hop may be silent: the serving instance's own bounds, and some slack."""
        if request.deadline_ms is not None:
            return request.deadline_ms / 1000 + RELAY_SLACK_S
        return request.wait_ms / 1000 + self.settings.synthesis_timeout_s + RELAY_SLACK_S

    async def _relay(
        self, sub: Subscription, reply: str, request: SynthesisRequest, request_id: str | None
    ) -> bool | None:
        """Every message to ``reply`` until the reply is complete; False on "no responders", None when declined."""
        bound = self._silence_bound_s(request)
        first = True
        while True:
            try:
                msg = await sub.next_msg(timeout=bound)
            except nats.errors.TimeoutError:
                await self._relay_gave_up(reply, request, errored=bound == AFTER_ERROR_S, request_id=request_id)
                return True
            headers = dict(msg.headers or {})
            if first and headers.get("Status") == "503":
                return False
            if first and headers.get(Header.STATUS.value) == DECLINED:
                return None
            first = False
            await self.nc.publish(reply, msg.data, headers=headers or None)
            kind = classify(headers, msg.data)
            if kind is ReplyKind.END:
                return True
            if kind is ReplyKind.ERROR:
                if not request.stream:
                    return True
                bound = AFTER_ERROR_S  # its end message follows at once
            elif kind is ReplyKind.AUDIO and not request.stream and _last_chunk(headers):
                return True

    async def _relay_gave_up(
        self, reply: str, request: SynthesisRequest, errored: bool, request_id: str | None
    ) -> None:
        """The serving instance fell silent: the caller hears so (and a stream its end), rather than nothing."""
        if not errored:
            error = TtsError(
                ErrorCode.INTERNAL,
                "the instance serving this request fell silent",
                "Send it again; see tts.status for the fleet.",
            )
            body, headers = error_body(error, self.nc.max_payload - HEADER_ROOM, request_id)
            await self.nc.publish(reply, body, headers=headers)
        if request.stream:
            await self.nc.publish(reply, b"", headers=end_headers(request_id=request_id))


def fleet_refusal(backend: str, view: dict[str, Any]) -> TtsError | None:
    """Why a backend this instance does not run cannot serve, from the fleet's view; None when the view is empty."""
    if view["failed"]:
        failed = view["failed"][0]
        return TtsError(
            ErrorCode.BACKEND_FAILED,
            f"backend {backend} is loaded nowhere; failed on {failed['instance']} ({failed['reason']})",
            failed["fix"] or f"tts-actor retry {backend}",
            backend=backend,
            state=State.FAILED.value,
            reason=failed["reason"],
        )
    if view["other"]:
        return TtsError(
            ErrorCode.BACKEND_NOT_READY,
            f"backend {backend} is loaded on no instance yet",
            "Retry after retry_after_ms, or pick another backend.",
            backend=backend,
            state=view["other"][0]["state"],
            retry_after_ms=1000,
        )
    return None


def _last_chunk(headers: dict[str, str]) -> bool:
    """A whole reply's last message (a reply in one message has index 0 of 1)."""
    try:
        return int(headers.get(Header.CHUNK_INDEX.value, "0")) >= int(headers.get(Header.CHUNK_COUNT.value, "1")) - 1
    except ValueError:
        return True
