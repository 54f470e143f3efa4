"""A small asyncio client for the service: what the translator (and the CLI) use.

Synthesis replies may come as several messages on one reply subject; the client
subscribes to its own inbox, sends the request there and reads them by kind
(:func:`tts_actor.wire.replies.classify`): audio, error, end, or a status message it skips.
It asks for an ack and heartbeats (:mod:`tts_actor.wire.heartbeat`), so that a responder that
dies or loses NATS costs seconds, not the whole timeout; and it sends a request again after
``busy``, ``backend_not_ready`` or a silent responder, within the caller's deadline
(:mod:`tts_actor.client.retry`), as far as its retry budget allows. Each request carries the caller's
absolute deadline and its send time (``Tts-Deadline``, ``Tts-Sent-At``: the service drops one that
arrives after its caller left), and none is written while the connection is down (nats-py would
buffer it and send it, stale, on reconnect): with a :class:`LinkState` the client waits for
reconnection within the deadline, without one it fails at once.

This module is the front door and the retry loop; reading one request's inbox is :mod:`.inbox`, the
stream reader :mod:`.stream`, the small JSON requests and cancel :mod:`.queries`, state watching :mod:`.watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client

from statemachine import StateEvent
from tts_actor.client.connection_state import wait_sendable
from tts_actor.client.inbox import Inbox, open_inbox
from tts_actor.client.queries import ServiceQueries
from tts_actor.client.reply import SynthesisReply
from tts_actor.client.retry import ClientRetryPolicy, RetryBudget
from tts_actor.client.stream import AudioStream
from tts_actor.client.watch import watch_states
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.observability.logs import get_logger
from tts_actor.wire.deadlines import now_epoch_ms
from tts_actor.wire.heartbeat import ResponderSilent, StallTimer
from tts_actor.wire.link import LinkState
from tts_actor.wire.messages import SynthesisRequest

__all__ = ["AudioStream", "SynthesisReply", "TtsClient"]

log = get_logger(__name__)
MIN_ATTEMPT_S = 0.1  # no retry that would leave less than this of the caller's budget


@dataclass
class TtsClient(ServiceQueries):
    nc: Client
    prefix: str = "tts"
    timeout_s: float = 30.0
    _ctl_timeout_s: float = field(default=5.0)
    heartbeat_ms: int | None = 1000  # None: no ack, no heartbeats, no stall timer (the caller's timeout only)
    retry_policy: ClientRetryPolicy | None = field(default_factory=ClientRetryPolicy)  # None: never retry
    retries: int = 0  # requests sent again since this client was made
    foreign_dropped: int = 0  # messages on a request's inbox without its Tts-Request-Id, dropped
    retry_budget: RetryBudget | None = field(default_factory=RetryBudget)  # None: retries unbounded but for time
    connection: LinkState | None = None  # from whoever called nats.connect: wait for reconnection on it

    async def synthesize(self, request: SynthesisRequest, timeout_s: float | None = None) -> SynthesisReply:
        """Send one request; returns the whole file (any format) or raises :class:`TtsError`."""
        if request.stream:  # the same file, gathered from the stream
            stream = self.stream(request, timeout_s)
            parts = [chunk async for chunk in stream]
            headers = {**stream.headers, **stream.end_headers}
            return SynthesisReply(b"".join(c.data for c in parts), headers, len(parts), stream.word_timings)
        budget = (timeout_s or self.timeout_s) + request.wait_ms / 1000
        deadline = time.monotonic() + budget
        caller_deadline_ms = now_epoch_ms() + round(budget * 1000)
        if self.retry_budget is not None:
            self.retry_budget.deposit()
        attempt = 0
        while True:
            await self._wait_sendable(deadline)
            try:
                return await self._synthesize_once(request, deadline - time.monotonic(), caller_deadline_ms)
            except TtsError as error:
                delay = self._retry_delay(error, attempt, deadline)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    def stream(
        self, request: SynthesisRequest, timeout_s: float | None = None, caller: str | None = None
    ) -> AudioStream:
        """The reply as it is made: ``async for chunk in client.stream(req)`` yields :class:`StreamChunk`.

        After the loop, ``.end_headers`` and ``.timings`` hold the end message's totals. To leave
        early, use ``async with client.stream(req) as chunks:`` (or call ``aclose()``): that cancels
        the request on ``tts.cancel``, so the backend stops at the next segment. ``caller``: as for the
        consent subjects, whom below this connection's NATS user the request is for (the audit trail names it).
        """
        return AudioStream(self, dataclasses.replace(request, stream=True), timeout_s or self.timeout_s, caller)

    def watch(self, bucket: str = "tts_state") -> AsyncIterator[StateEvent]:
        """Current states from the KV first, then every live event, in order, no duplicates."""
        return watch_states(self.nc, self.subject("state", ">"), bucket)

    def _retry_delay(self, error: TtsError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before sending the request again, or None to give the caller ``error``."""
        if self.retry_policy is None or not self.retry_policy.retryable(error):
            return None
        delay = self.retry_policy.delay_s(error, attempt)
        latest = deadline - time.monotonic() - MIN_ATTEMPT_S  # a retry must leave the attempt some time
        if delay >= latest:
            return None
        # a busy answer's retry_after_ms is a slot the service handed out (staggered by its measured pace): coming
        # back then is the service's own metering, not a storm; the budget bounds the unpaced retries
        paced = error.code is ErrorCode.BUSY and error.retry_after_ms is not None
        if self.retry_budget is not None and not paced:
            paid_in = self.retry_budget.reserve(latest)
            if paid_in is None:
                log.info("synthesis_retry_budget_spent", code=error.code.value, attempt=attempt + 1)
                return None
            delay = max(delay, paid_in)
        self.retries += 1
        log.debug("synthesis_retry", code=error.code.value, attempt=attempt + 1, delay_ms=round(delay * 1000))
        return delay

    async def _wait_sendable(self, deadline: float) -> None:
        """Return once the connection is up; a request is never written into a disconnected link's buffer."""
        await wait_sendable(self.nc, self.connection, deadline - time.monotonic() - MIN_ATTEMPT_S)

    async def _synthesize_once(
        self, request: SynthesisRequest, budget_s: float, caller_deadline_ms: int | None = None
    ) -> SynthesisReply:
        """One attempt; the service is told the caller's remaining budget (``deadline_ms``) and its deadline."""
        remaining_ms = max(1, int(budget_s * 1000))
        if request.deadline_ms is None or request.deadline_ms > remaining_ms:
            request = dataclasses.replace(request, deadline_ms=remaining_ms)
        timer = StallTimer(budget_s, self.heartbeat_ms)
        async with self._exchange(request, caller_deadline_ms) as inbox:
            try:
                return await inbox.read_whole(timer)
            except ResponderSilent:
                with contextlib.suppress(Exception):  # a live but cut-off instance stops working on it
                    await self._tell_cancel(inbox.request_id)
                raise

    def _exchange(
        self, request: SynthesisRequest, caller_deadline_ms: int | None = None, caller: str | None = None
    ) -> AbstractAsyncContextManager[Inbox]:
        """A fresh inbox with the request sent to it (:func:`open_inbox`); foreign messages count here."""
        return open_inbox(
            self.nc, self.subject("synthesize"), request, self.heartbeat_ms, self._foreign, caller_deadline_ms, caller
        )

    def _foreign(self, msg: Any) -> None:
        """A message on a request's inbox that is not of that request: dropped, counted, logged."""
        self.foreign_dropped += 1
        log.warning("reply_foreign_dropped", subject=msg.subject, count=self.foreign_dropped)
