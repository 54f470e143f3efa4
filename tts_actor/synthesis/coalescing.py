"""One synthesis for identical requests: on this instance (a table of flights) and across the fleet (claims).

:meth:`Coalescer.settle` decides, for a request that may use the audio cache, whether it is answered at
once (a hit; a join to a synthesis in progress here; the file another instance was synthesizing, waited
for) or leads: it then synthesizes and feeds the :class:`~tts_actor.synthesis.flights.Flight` that later
requests join, holding the fleet's claim until the file is stored (:meth:`finish`) or the synthesis
failed (:meth:`abandon`). ``"cache": false`` never joins and is never joined.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from tts_actor.lifecycle.jobs import JobControl
from tts_actor.lifecycle.registry import Route
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_cache import AudioCache
from tts_actor.synthesis.claims import Claim, FleetClaims, HeldElsewhere, Waited
from tts_actor.synthesis.flights import Flight, FlightTable
from tts_actor.synthesis.joining import answer_file, answer_flight
from tts_actor.wire.framing import Framer
from tts_actor.wire.messages import SynthesisRequest

log = get_logger(__name__)
HIT, MISS, BYPASS, JOINED = "hit", "miss", "bypass", "joined"
RELEASE_BOUND_S = 2.0


@dataclass
class Lead:
    """This request synthesizes ``key``; ``flight`` is what others follow (None: a bypass, nobody follows)."""

    key: str
    flight: Flight | None = None
    claim: Claim | None = None
    done: bool = field(default=False)


@dataclass(frozen=True)
class Answer:
    """What a request that needs no synthesis answers through."""

    framer: Framer
    request: SynthesisRequest
    route: Route
    started: float
    control: JobControl


class Coalescer:
    """The flights of this instance, the fleet's claims and the audio cache, for :meth:`settle`."""

    def __init__(self, cache: AudioCache, claims: FleetClaims) -> None:
        self.cache = cache
        self.claims = claims
        self.flights = FlightTable()
        self._stores: set[asyncio.Task[None]] = set()

    async def settle(self, key: str, answer: Answer, span: Span) -> Lead | str:
        """A :class:`Lead` to synthesize, or how the request was answered (``hit``, ``joined``)."""
        request = answer.request
        if not request.cache:
            return self._counted(span, BYPASS, Lead(key))
        while True:
            flight = self.flights.get(key)
            if flight is None:
                cached = await self.cache.get(key)
                if cached is not None and cached.data:
                    await answer_file(
                        answer.framer, cached.data, cached.headers, request, answer.route, answer.started, HIT
                    )
                    return self._counted(span, HIT, HIT)
                flight = self.flights.get(key)  # started while the cache was asked
            if flight is not None:
                if await answer_flight(answer.framer, flight, request, answer.route, answer.started, answer.control):
                    return self._counted(span, JOINED, JOINED)
                continue  # its leader failed before this request got anything: lead, or join the next one
            flight = self.flights.start(key, request.stream)
            lead = await self._claim(flight, answer.control)
            if lead is not None:
                return self._counted(span, MISS, lead)
            assert flight.file is not None  # another instance's file, read from the cache
            await answer_file(answer.framer, flight.file, flight.headers, request, answer.route, answer.started, JOINED)
            return self._counted(span, JOINED, JOINED)

    async def _claim(self, flight: Flight, control: JobControl) -> Lead | None:
        """The fleet's claim (a Lead), or None once another instance's stored file finished ``flight``."""
        stale: int | None = None
        try:
            while True:
                got = await self.claims.acquire(flight.key, stale)
                if not isinstance(got, HeldElsewhere):
                    return Lead(flight.key, flight, got)
                log.debug("audio_claim_held", key=flight.key[:16], holder=got.holder)
                waited, revision = await self.claims.wait(flight.key, control.deadline)
                if waited is Waited.TIMEOUT:
                    raise control.stop_error() or TimeoutError("deadline")
                if waited is Waited.UNKNOWN:  # the fleet cannot say: synthesize here rather than wait blind
                    return Lead(flight.key, flight, None)
                cached = await self.cache.get(flight.key)
                if cached is not None and cached.data:
                    flight.finish(cached.data, cached.headers)
                    self.flights.end(flight)
                    return None
                if waited is Waited.DEAD:
                    log.info("audio_claim_holder_gone", key=flight.key[:16], holder=got.holder, then="synthesize")
                stale = revision if waited is Waited.DEAD else None
        except BaseException as exc:
            flight.fail(exc)
            self.flights.end(flight)
            raise

    def finish(self, lead: Lead, file: bytes | None, headers: dict[str, str], reference: str | None = None) -> None:
        """The leader's reply is out: joiners get the file now, the cache in the background, then the claim goes."""
        lead.done = True
        if lead.flight is None:
            return
        if not file:
            self._end_later(lead, RuntimeError("the synthesis left no file"))
            return
        lead.flight.finish(file, headers)
        self.cache.remember(lead.key, file, headers)  # a hit here from now on, before the store's round trips
        self._track(self._store(lead, file, headers, reference))

    async def abandon(self, lead: Lead, error: BaseException) -> None:
        """The leader stopped without a file: its joiners try again, the claim goes (bounded: this is cleanup)."""
        if lead.done:
            return
        lead.done = True
        if lead.flight is not None:
            lead.flight.fail(error)
            self.flights.end(lead.flight)
        try:
            await asyncio.wait_for(self.claims.release(lead.claim), RELEASE_BOUND_S)
        except Exception as exc:  # cleanup: the claim's TTL ends it
            log.info("audio_claim_release_failed", key=lead.key[:16], error=repr(exc))

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Let stores in flight finish (shutdown, tests), within a bound."""
        if self._stores:
            await asyncio.wait(set(self._stores), timeout=timeout_s)

    async def _store(self, lead: Lead, file: bytes, headers: dict[str, str], reference: str | None) -> None:
        try:
            stored = await self.cache.put(lead.key, file, headers, reference)
            log.debug("audio_cache_stored", key=lead.key[:16], bytes=len(file), stored=stored)
        except Exception as exc:  # the put logs its own failures; this is for anything else
            log.warning("audio_cache_store_failed", error=repr(exc))
        finally:
            if lead.flight is not None:
                self.flights.end(lead.flight)
            await self.claims.release(lead.claim)

    def _end_later(self, lead: Lead, error: BaseException) -> None:
        lead.done = False
        self._track(self.abandon(lead, error))

    def _track(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._stores.add(task)
        task.add_done_callback(self._stores.discard)

    @staticmethod
    def _counted(span: Span, outcome: str, result: Lead | str) -> Lead | str:
        span.set_attribute("tts.audio_cache", outcome)
        metrics.AUDIO_CACHE.labels(outcome).inc()
        return result
