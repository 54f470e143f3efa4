"""The NATS edge: a ``nats.micro`` service named ``tts``, its registration and its small endpoints.

Status, voices, health and the voice-profile endpoints answer from the current state at once.
``tts.synthesize`` is :mod:`tts_actor.nats_edge.synthesize`; control and cancel, which every
instance receives, are :mod:`tts_actor.nats_edge.control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from tts_actor import __version__
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.fleet.audit import AuditTrail
from tts_actor.fleet.erasure import FleetErasure
from tts_actor.fleet.view import fleet_status
from tts_actor.lifecycle.registry import Registry
from tts_actor.nats_edge.control import ControlEndpoints
from tts_actor.nats_edge.custom_voices import CustomVoiceEndpoints
from tts_actor.nats_edge.detect import DetectEndpoint
from tts_actor.nats_edge.respond import respond_error
from tts_actor.nats_edge.stats import endpoint_data
from tts_actor.nats_edge.synthesize import SynthesizeEndpoint
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.cached import CachedSynthesis
from tts_actor.synthesis.consents import ConsentStore
from tts_actor.synthesis.custom_voices import CustomVoices
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.synthesis.profiles import ProfileStore
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
FLEET_READ_TIMEOUT_S = 2.0
__all__ = ["TtsService"]


class TtsService:
    """Registers the endpoints and serves them from a :class:`Registry`."""

    def __init__(self, nc: Client, registry: Registry, settings: Settings) -> None:
        self.nc = nc
        self.registry = registry
        self.settings = settings
        self.subjects = Subjects.of(settings)
        self._service: Service | None = None
        self._control_subs: list[Any] = []
        self.profiles = ProfileStore(nc, settings)
        self.cached = CachedSynthesis(nc, settings, self.profiles)  # profiles in, the audio cache around
        self.pipeline = SynthesisPipeline(registry, settings, self.cached)
        # who created, deleted or used a voice or consent: `await self.audit.record(action, actor, id, **fields)`
        self.audit = AuditTrail(nc, settings)
        # a deleted voice's clip, cached audio and every instance's conditioning
        self.erasure = FleetErasure(nc, settings, registry, self.profiles, self.cached.cache, self.pipeline)
        self.custom_voices = CustomVoices(
            self.profiles, ConsentStore(nc, settings), settings, erase=self.erasure.delete, audit=self.audit.record
        )
        self.custom_voice_endpoints = CustomVoiceEndpoints(self.custom_voices, settings, lambda: nc.max_payload)
        self.synthesize = SynthesizeEndpoint(nc, registry, settings, self.pipeline, self.audit)
        self.control = ControlEndpoints(nc, registry, settings, self.pipeline)
        self.routing = self.synthesize.routing
        self.detect = DetectEndpoint(settings, nc.max_payload)
        self._prepare: asyncio.Task[None] | None = None  # the watermark model loading, at start

    @property
    def _inflight(self) -> set[asyncio.Task[None]]:
        """Syntheses answering now (forwarded ones included)."""
        return self.synthesize.inflight

    async def start(self) -> None:
        s = self.settings
        self._service = await add_service(
            self.nc,
            ServiceConfig(
                name="tts",
                version=__version__,
                description="Text-to-speech over NATS: tts.synthesize, tts.status, tts.voices, tts.health, tts.detect",
                metadata={"instance": s.instance, "backends": ",".join(s.backends)},
                queue_group=s.queue_group,
                stats_handler=lambda _endpoint: endpoint_data(self.registry, len(self._inflight)),
            ),
        )
        handlers = {
            "synthesize": self.synthesize.handle,
            "status": self._on_status,
            "voices": self._on_voices,
            "health": self._on_health,
            **self.custom_voice_endpoints.handlers(),
            "detect": self.detect.handle,
        }
        for name, subject in self.subjects.endpoints():
            await self._service.add_endpoint(
                EndpointConfig(name=name, subject=subject, handler=handlers[name], queue_group=s.queue_group)
            )
        # control goes to every instance (no queue group): each one retries its own backend
        self._control_subs.append(await self.nc.subscribe(self.subjects.control(), cb=self.control.on_control))
        # cancel reaches every instance too: the one serving the request acts
        self._control_subs.append(await self.nc.subscribe(self.subjects.cancel, cb=self.control.on_cancel))
        # the watermark model (when some engine here needs it) loads in a thread, beside everything else
        specs = [actor.adapter.spec for actor in self.registry.actors.values()]
        self._prepare = asyncio.create_task(self.pipeline.marking.prepare(specs))
        await self.routing.start()  # tts.backend.<name>.synthesize while <name> is loaded here
        await self.erasure.start()  # replays the erasures made while this instance was away
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
        await self.control.stop()
        if self._prepare is not None:  # a thread cannot be stopped: only the wait for it is
            self._prepare.cancel()
        if self._service is not None:
            try:
                await asyncio.wait_for(self._service.stop(), 2.0)
            except Exception as exc:
                log.warning("service_stop_incomplete", error=repr(exc))
        if inflight := self._inflight:  # let running syntheses answer, within a bound; the rest get an error reply
            _, late = await asyncio.wait(inflight, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.cached.close()  # audio already answered, still being stored: a bounded wait
        await self.erasure.stop()
        await self.audit.drain()

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
        """The engines' voices; with ``{"profiles": true}`` also the voice profiles' consent report."""
        voices = self.registry.voices()
        if _asks_for_profiles(req.data):
            try:
                voices["profiles"] = await self.custom_voices.profile_report()
            except TtsError as error:
                voices["profiles"] = {"error": error.to_dict()["error"]}
        await self._reply_json(req, voices)

    async def _on_health(self, req: Request) -> None:
        await self._reply_json(req, self.registry.health())

    async def _respond_error(self, req: Request, error: TtsError) -> None:
        await respond_error(req, error, self.nc.max_payload)


def _asks_for_profiles(data: bytes) -> bool:
    if not data.strip() or len(data) > 1024:
        return False
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("profiles") is True
