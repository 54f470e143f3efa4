"""Liveness of one reply: the service's ack and heartbeats, and the caller's stall timer.

A caller that sends ``Tts-Heartbeat-Ms: N`` on a synthesis request gets, on its reply subject,
an ack at once (empty body, ``Tts-Status: accepted``) and then a heartbeat (``Tts-Status:
working``) every N ms in which nothing else was sent: while the request is queued, waits for a
load, or an engine call runs. A caller that hears nothing for :data:`STALL_BEATS` intervals knows
nobody works on its request any more (the instance died, or lost its NATS connection) and stops
long before its own timeout, with a retryable error (the NATS "request many" stall convention).
Callers that do not send the header (``nats req``) get exactly the replies they always got.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors

from tts_actor.errors import ErrorCode, TtsError, invalid
from tts_actor.observability.logs import get_logger
from tts_actor.wire.framing import Publish
from tts_actor.wire.headers import Header

log = get_logger(__name__)
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 30_000
STALL_BEATS = 3  # intervals of silence after which the caller gives up on the responder
ACCEPTED = "accepted"
WORKING = "working"


def requested_interval_ms(headers: dict[str, str] | None) -> int | None:
    """The caller's ``Tts-Heartbeat-Ms``, checked; None when it did not ask for heartbeats."""
    raw = (headers or {}).get(Header.HEARTBEAT_MS.value)
    if raw is None:
        return None
    fix = f"Send {Header.HEARTBEAT_MS.value}: 1000 (ms, {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}), or leave it out."
    try:
        interval = int(raw.strip())
    except ValueError:
        raise invalid(f"{Header.HEARTBEAT_MS.value} must be a whole number of milliseconds", fix) from None
    if not MIN_INTERVAL_MS <= interval <= MAX_INTERVAL_MS:
        raise invalid(f"{Header.HEARTBEAT_MS.value} is out of range ({MIN_INTERVAL_MS}..{MAX_INTERVAL_MS})", fix)
    return interval


class ReplyLost(Exception):
    """The reply could not be handed to NATS (connection closed or reconnecting): nobody is told, nothing crashed."""


class Heartbeat:
    """The ack, then a ``working`` message whenever a whole interval passed with nothing sent."""

    def __init__(self, publish: Publish, interval_ms: int | None, request_id: str) -> None:
        self._publish = publish
        self.interval_s = interval_ms / 1000 if interval_ms else None
        self.request_id = request_id
        self._last_sent = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.beats = 0

    async def start(self) -> None:
        """Send the ack now (before any other reply) and start beating; a no-op for callers that did not ask."""
        if self.interval_s is None:
            return
        await self._send(ACCEPTED)
        self._task = asyncio.create_task(self._beat())

    def sent(self) -> None:
        """Something else went out on the reply subject: the next beat is due a whole interval from now."""
        self._last_sent = time.monotonic()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def publisher(self, publish: Publish) -> Publish:
        """``publish`` that counts as a sign of life and turns a lost connection into :class:`ReplyLost`."""

        async def send(data: bytes, headers: dict[str, str]) -> None:
            try:
                await publish(data, headers)
            except nats.errors.Error as exc:  # OutboundBufferLimitError, ConnectionClosedError, ...
                raise ReplyLost(repr(exc)) from exc
            self.sent()

        return send

    async def _beat(self) -> None:
        assert self.interval_s is not None
        while True:
            await asyncio.sleep(max(0.0, self._last_sent + self.interval_s - time.monotonic()))
            if time.monotonic() - self._last_sent >= self.interval_s:
                await self._send(WORKING)
                self.beats += 1

    async def _send(self, status: str) -> None:
        headers = {Header.STATUS.value: status, Header.REQUEST_ID.value: self.request_id}
        try:
            await self._publish(b"", headers)
        except Exception as exc:  # the connection is gone: the caller's stall timer tells it, not us
            log.debug("heartbeat_not_sent", request_id=self.request_id, error=repr(exc))
        self._last_sent = time.monotonic()


# --- the caller's side ---------------------------------------------------------------------------------


class ResponderSilent(TtsError):
    """No message (ack, heartbeat, audio) within the stall window: the instance died or lost NATS."""


class StallTimer:
    """How long the next read may wait: until the caller's deadline, or a stall window when heartbeats were asked."""

    def __init__(self, budget_s: float, interval_ms: int | None) -> None:
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.stall_s = STALL_BEATS * interval_ms / 1000 if interval_ms else None
        self.heard = False  # a message (the ack at least) arrived

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def next_wait(self) -> tuple[float, bool]:
        """Seconds to wait for the next message, and whether a timeout then means a stall (not the deadline)."""
        remaining = self.remaining_s()
        if self.stall_s is not None and self.stall_s < remaining:
            return self.stall_s, True
        return max(remaining, 0.001), False

    def stall_error(self, request_id: str) -> ResponderSilent:
        what = "since its last message" if self.heard else "after the request was sent (no ack)"
        return ResponderSilent(
            ErrorCode.BACKEND_NOT_READY,
            f"the instance serving request {request_id} went silent: nothing for {self.stall_s:.1f} s {what}; "
            "it died or lost its NATS connection",
            "Retry the request (another instance, or this one once it is back); check `tts-actor status`.",
            retry_after_ms=250,
        )
