"""One request's inbox: send a synthesis request to a fresh reply subject, then read only that request's replies.

Apart from the retry loop and the stream reader because both read the same way: a message counts only if it
carries the request's ``Tts-Request-Id`` (a forged one, or a late one of an earlier request, is dropped and
counted, and is no sign of life), and each wait is bounded by the stall timer (:mod:`tts_actor.wire.heartbeat`)
so that a silent responder costs seconds, not the caller's whole timeout.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import MaxPayloadError
from nats.errors import TimeoutError as NatsTimeoutError

from tts_actor.client.reply import SynthesisReply, raise_for_error
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.observability.tracing import inject_headers
from tts_actor.wire.caller import CALLER_HEADER
from tts_actor.wire.deadlines import now_epoch_ms
from tts_actor.wire.headers import Header
from tts_actor.wire.heartbeat import StallTimer
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.replies import ReplyKind, TimingParts, classify


def _ours(msg: Any, request_id: str) -> bool:
    """A message of this request: it carries the request's id, or it is the server's own "no responders"."""
    headers = msg.headers or {}
    if headers.get(Header.REQUEST_ID.value) == request_id:
        return True
    return headers.get("Status") == "503" and not msg.data


@dataclass
class Inbox:
    """The subscription a request's replies arrive on; ``on_foreign`` hears each message dropped as not ours."""

    sub: Any
    request_id: str
    on_foreign: Callable[[Any], None]
    timing_parts: TimingParts = field(default_factory=TimingParts)  # the word timings, as their parts arrive

    async def next(self, timer: StallTimer) -> Any:
        """The next message of this request on the reply subject, within the stall window and the caller's deadline.

        Messages that do not carry the request's ``Tts-Request-Id`` (forged onto the inbox, or late ones of an
        earlier request) are dropped and counted; they are no sign of life either.
        """
        wait_s, stall = timer.next_wait()
        until = time.monotonic() + wait_s
        while True:
            try:
                msg = await self.sub.next_msg(timeout=max(0.001, until - time.monotonic()))
            except NatsTimeoutError:
                if stall:
                    raise timer.stall_error(self.request_id) from None
                raise TtsError(
                    ErrorCode.SYNTHESIS_TIMEOUT,
                    f"no reply within {timer.budget_s:.1f} s",
                    "Check `tts-actor status`; raise the client timeout for very long texts.",
                ) from None
            if _ours(msg, self.request_id):
                timer.heard = True
                self.timing_parts.take(dict(msg.headers or {}), msg.data)
                return msg
            self.on_foreign(msg)

    async def next_audio(self, timer: StallTimer) -> Any:
        """The next audio message; errors raise, status messages are skipped."""
        while True:
            msg = await self.next(timer)
            kind = classify(dict(msg.headers or {}), msg.data)
            if kind is ReplyKind.ERROR:
                raise_for_error(msg.headers, msg.data)
            if kind is ReplyKind.AUDIO:
                return msg
            if kind is ReplyKind.END:
                raise TtsError(ErrorCode.INTERNAL, "the reply ended before its audio", "Retry the request.")

    async def read_whole(self, timer: StallTimer) -> SynthesisReply:
        """A whole file: its chunks in order, checked against the announced count and size."""
        first = await self.next_audio(timer)
        headers = dict(first.headers or {})
        count = int(headers.get(Header.CHUNK_COUNT.value, "1"))
        parts = [first.data]
        for expected in range(1, count):
            msg = await self.next_audio(timer)
            index = int((msg.headers or {}).get(Header.CHUNK_INDEX.value, "-1"))
            if index != expected:
                raise TtsError(
                    ErrorCode.INTERNAL, f"chunk {index} arrived where {expected} was expected", "Retry the request."
                )
            parts.append(msg.data)
        audio = b"".join(parts)
        total = int(headers.get(Header.TOTAL_BYTES.value, len(audio)))
        if len(audio) != total:
            raise TtsError(ErrorCode.INTERNAL, f"reassembled {len(audio)} bytes of {total}", "Retry the request.")
        return SynthesisReply(audio, headers, count, self.timing_parts.result())


@contextlib.asynccontextmanager
async def open_inbox(
    nc: Client,
    subject: str,
    request: SynthesisRequest,
    heartbeat_ms: int | None,
    on_foreign: Callable[[Any], None],
    caller_deadline_ms: int | None = None,
    caller: str | None = None,
) -> AsyncIterator[Inbox]:
    """Subscribe to a fresh inbox, send the request there with an id of ours; unsubscribe after.

    ``Tts-Sent-At`` always, ``Tts-Deadline`` when the caller has one (a stream's timeout is per message),
    ``Tts-Caller`` when the request is on behalf of someone below this connection's user (the HTTP edge's key).
    """
    inbox = nc.new_inbox()
    request_id = uuid.uuid4().hex
    sub = await nc.subscribe(inbox)
    headers = {Header.REQUEST_ID.value: request_id}
    if heartbeat_ms:
        headers[Header.HEARTBEAT_MS.value] = str(heartbeat_ms)
    if caller_deadline_ms is not None:
        headers[Header.DEADLINE.value] = str(caller_deadline_ms)
    if caller is not None:
        headers[CALLER_HEADER] = caller
    try:
        payload = request.to_json()
        headers[Header.SENT_AT.value] = str(now_epoch_ms())
        try:
            await nc.publish(subject, payload, reply=inbox, headers=inject_headers(headers))
        except MaxPayloadError:
            raise TtsError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"request is {len(payload)} bytes; the NATS server carries at most {nc.max_payload}",
                "Send shorter text or reference audio, or raise max_payload in the server's config.",
            ) from None
        yield Inbox(sub, request_id, on_foreign)
    finally:
        with contextlib.suppress(Exception):  # the connection may be gone already
            await sub.unsubscribe()
