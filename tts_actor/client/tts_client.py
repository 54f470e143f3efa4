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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from statemachine import StateEvent
from tts_actor.client.connection_state import wait_sendable
from tts_actor.client.retry import ClientRetryPolicy, RetryBudget
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet.state_kv import decode_event, parse_key
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import inject_headers
from tts_actor.wire.heartbeat import ResponderSilent, StallTimer
from tts_actor.wire.link import LinkState
from tts_actor.wire.messages import Header, SynthesisRequest
from tts_actor.wire.replies import ReplyKind, StreamChunk, chunk_from, classify, parse_timings
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
MIN_ATTEMPT_S = 0.1  # no retry that would leave less than this of the caller's budget
CANCEL_WAIT_S = 1.0  # a found cancel is answered within a round trip; silence this long means no instance has it
CANCEL_NOT_FOUND = "not found on any instance"


def epoch_ms() -> int:
    """Wall-clock unix time in ms: what ``Tts-Deadline`` and ``Tts-Sent-At`` carry (the monotonic clock is ours)."""
    return time.time_ns() // 1_000_000


class NoResponders(TtsError):
    """No instance of the service is listening."""


@dataclass(frozen=True)
class SynthesisReply:
    audio: bytes
    headers: dict[str, str]
    chunks: int

    @property
    def backend(self) -> str:
        return self.headers[Header.BACKEND.value]

    @property
    def sample_rate(self) -> int:
        return int(self.headers[Header.SAMPLE_RATE.value])

    @property
    def duration_ms(self) -> int:
        return int(self.headers[Header.DURATION_MS.value])

    @property
    def content_type(self) -> str:
        return self.headers.get(Header.CONTENT_TYPE.value, "")

    @property
    def request_id(self) -> str:
        return self.headers.get(Header.REQUEST_ID.value, "")

    @property
    def timings(self) -> list[dict[str, int]]:
        """``[{index, text_start, text_end, start_ms, end_ms}]``: where each segment is spoken."""
        return parse_timings(self.headers)


def raise_for_error(headers: dict[str, str] | None, data: bytes) -> None:
    headers = headers or {}
    if headers.get("Status") == "503":
        raise NoResponders(
            ErrorCode.BACKEND_NOT_READY,
            "no tts service instance is listening",
            "Start one with `tts-actor serve`, or check NATS_URL.",
        )
    if Header.SERVICE_ERROR_CODE.value in headers:
        try:
            raise TtsError.from_dict(json.loads(data))
        except (ValueError, KeyError):
            raise TtsError(
                ErrorCode.INTERNAL, headers.get(Header.SERVICE_ERROR.value, "service error"), "See the service log."
            ) from None


def _ours(msg: Any, request_id: str) -> bool:
    """A message of this request: it carries the request's id, or it is the server's own "no responders"."""
    headers = msg.headers or {}
    if headers.get(Header.REQUEST_ID.value) == request_id:
        return True
    return headers.get("Status") == "503" and not msg.data


@dataclass
class TtsClient:
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

    def subject(self, *parts: str) -> str:
        return Subjects(self.prefix).subject(*parts)

    async def synthesize(self, request: SynthesisRequest, timeout_s: float | None = None) -> SynthesisReply:
        """Send one request; returns the whole file (any format) or raises :class:`TtsError`."""
        if request.stream:  # the same file, gathered from the stream
            stream = self.stream(request, timeout_s)
            parts = [chunk async for chunk in stream]
            headers = {**stream.headers, **stream.end_headers}
            return SynthesisReply(b"".join(c.data for c in parts), headers, len(parts))
        budget = (timeout_s or self.timeout_s) + request.wait_ms / 1000
        deadline = time.monotonic() + budget
        caller_deadline_ms = epoch_ms() + round(budget * 1000)
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

    def _retry_delay(self, error: TtsError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before sending the request again, or None to give the caller ``error``."""
        if self.retry_policy is None or not self.retry_policy.retryable(error):
            return None
        delay = self.retry_policy.delay_s(error, attempt)
        latest = deadline - time.monotonic() - MIN_ATTEMPT_S  # a retry must leave the attempt some time
        if delay >= latest:
            return None
        if self.retry_budget is not None:
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
        async with self._exchange(request, caller_deadline_ms) as (sub, request_id):
            try:
                return await self._read_whole(sub, timer, request_id)
            except ResponderSilent:
                with contextlib.suppress(Exception):  # a live but cut-off instance stops working on it
                    await self._tell_cancel(request_id)
                raise

    async def _read_whole(self, sub: Any, timer: StallTimer, request_id: str) -> SynthesisReply:
        first = await self._next_audio(sub, timer, request_id)
        headers = dict(first.headers or {})
        count = int(headers.get(Header.CHUNK_COUNT.value, "1"))
        parts = [first.data]
        for expected in range(1, count):
            msg = await self._next_audio(sub, timer, request_id)
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
        return SynthesisReply(audio, headers, count)

    def stream(self, request: SynthesisRequest, timeout_s: float | None = None) -> AudioStream:
        """The reply as it is made: ``async for chunk in client.stream(req)`` yields :class:`StreamChunk`.

        After the loop, ``.end_headers`` and ``.timings`` hold the end message's totals. To leave
        early, use ``async with client.stream(req) as chunks:`` (or call ``aclose()``): that cancels
        the request on ``tts.cancel``, so the backend stops at the next segment.
        """
        return AudioStream(self, dataclasses.replace(request, stream=True), timeout_s or self.timeout_s)

    async def cancel(self, request_id: str, timeout_s: float = CANCEL_WAIT_S) -> dict[str, Any]:
        """Stop a request now; the serving instance's answer, or ``ok: false`` when no instance has it.

        Every instance hears ``tts.cancel`` and only the one serving the request answers, at once; so
        silence for ``timeout_s`` (or no instance listening) means it is unknown, or finished already.
        """
        payload = json.dumps({"request_id": request_id}).encode()
        try:
            msg = await self.nc.request(self.subject("cancel"), payload, timeout=timeout_s)
        except (NatsTimeoutError, NoRespondersError):
            return {"ok": False, "request_id": request_id, "error": CANCEL_NOT_FOUND}
        return json.loads(msg.data)  # type: ignore[no-any-return]

    async def _tell_cancel(self, request_id: str) -> None:
        """Cancel without waiting for the answer: for callers that are leaving anyway."""
        await self.nc.publish(self.subject("cancel"), json.dumps({"request_id": request_id}).encode())
        await self.nc.flush()

    @contextlib.asynccontextmanager
    async def _exchange(
        self, request: SynthesisRequest, caller_deadline_ms: int | None = None
    ) -> AsyncIterator[tuple[Any, str]]:
        """Subscribe to a fresh inbox, send the request there with an id of ours; unsubscribe after.

        ``Tts-Sent-At`` always, ``Tts-Deadline`` when the caller has one (a stream's timeout is per message).
        """
        inbox = self.nc.new_inbox()
        request_id = uuid.uuid4().hex
        sub = await self.nc.subscribe(inbox)
        headers = {Header.REQUEST_ID.value: request_id}
        if self.heartbeat_ms:
            headers[Header.HEARTBEAT_MS.value] = str(self.heartbeat_ms)
        if caller_deadline_ms is not None:
            headers[Header.DEADLINE.value] = str(caller_deadline_ms)
        try:
            payload = request.to_json()
            headers[Header.SENT_AT.value] = str(epoch_ms())
            try:
                await self.nc.publish(self.subject("synthesize"), payload, reply=inbox, headers=inject_headers(headers))
            except MaxPayloadError:
                raise TtsError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"request is {len(payload)} bytes; the NATS server carries at most {self.nc.max_payload}",
                    "Send shorter text or reference audio, or raise max_payload in the server's config.",
                ) from None
            yield sub, request_id
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()

    async def _next_audio(self, sub: Any, timer: StallTimer, request_id: str) -> Any:
        """The next audio message; errors raise, status messages are skipped."""
        while True:
            msg = await self._next(sub, timer, request_id)
            kind = classify(dict(msg.headers or {}), msg.data)
            if kind is ReplyKind.ERROR:
                raise_for_error(msg.headers, msg.data)
            if kind is ReplyKind.AUDIO:
                return msg
            if kind is ReplyKind.END:
                raise TtsError(ErrorCode.INTERNAL, "the reply ended before its audio", "Retry the request.")

    async def _next(self, sub: Any, timer: StallTimer, request_id: str) -> Any:
        """The next message of this request on the reply subject, within the stall window and the caller's deadline.

        Messages that do not carry the request's ``Tts-Request-Id`` (forged onto the inbox, or late ones of an
        earlier request) are dropped and counted; they are no sign of life either.
        """
        wait_s, stall = timer.next_wait()
        until = time.monotonic() + wait_s
        while True:
            try:
                msg = await sub.next_msg(timeout=max(0.001, until - time.monotonic()))
            except NatsTimeoutError:
                if stall:
                    raise timer.stall_error(request_id) from None
                raise TtsError(
                    ErrorCode.SYNTHESIS_TIMEOUT,
                    f"no reply within {timer.budget_s:.1f} s",
                    "Check `tts-actor status`; raise the client timeout for very long texts.",
                ) from None
            if _ours(msg, request_id):
                timer.heard = True
                return msg
            self.foreign_dropped += 1
            log.warning("reply_foreign_dropped", subject=msg.subject, count=self.foreign_dropped)

    async def _request_json(self, subject: str, payload: bytes = b"") -> dict[str, Any]:
        try:
            msg = await self.nc.request(subject, payload, timeout=self._ctl_timeout_s, headers=inject_headers())
        except NatsTimeoutError:
            raise TtsError(
                ErrorCode.INTERNAL,
                f"no reply on {subject} within {self._ctl_timeout_s} s",
                "Check that the service runs and NATS_URL points at its server.",
            ) from None
        except Exception as exc:
            if type(exc).__name__ == "NoRespondersError":
                raise NoResponders(
                    ErrorCode.BACKEND_NOT_READY,
                    f"no service listens on {subject}",
                    "Start one with `tts-actor serve`, or check NATS_URL.",
                ) from None
            raise
        raise_for_error(msg.headers, msg.data)
        return json.loads(msg.data)

    async def status(self) -> dict[str, Any]:
        return await self._request_json(self.subject("status"))

    async def voices(self) -> dict[str, Any]:
        return await self._request_json(self.subject("voices"))

    async def health(self) -> dict[str, Any]:
        return await self._request_json(self.subject("health"))

    async def create_voice(
        self, reference_audio: bytes, reference_text: str | None = None, language: str | None = None
    ) -> dict[str, Any]:
        """Store a reference clip as a voice profile; the reply's ``voice_profile`` is its id (keep it private)."""
        body: dict[str, Any] = {"reference_audio": base64.b64encode(reference_audio).decode()}
        if reference_text is not None:
            body["reference_text"] = reference_text
        if language is not None:
            body["language"] = language
        return await self._request_json(self.subject("voices", "create"), json.dumps(body).encode())

    async def delete_voice(self, profile_id: str) -> dict[str, Any]:
        return await self._request_json(
            self.subject("voices", "delete"), json.dumps({"voice_profile": profile_id}).encode()
        )

    async def control(self, backend: str, action: str) -> dict[str, Any]:
        return await self._request_json(self.subject("control", backend, action))

    async def watch(self, bucket: str = "tts_state") -> AsyncIterator[StateEvent]:
        """Current states from the KV first, then every live event, in order, no duplicates."""
        sub = await self.nc.subscribe(self.subject("state", ">"))
        last: dict[tuple[str, str], int] = {}
        try:
            try:
                kv = await self.nc.jetstream(timeout=2.0).key_value(bucket)
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:
                        break
                    # the same event sits under <backend> and <backend>.<instance>: the seq check drops the copy
                    event = decode_event(entry.value) if parse_key(entry.key) is not None else None
                    if event is not None:
                        if last.get((event.backend, event.instance), -1) >= event.seq:
                            continue
                        last[(event.backend, event.instance)] = event.seq
                        yield event
                await watcher.stop()
            except Exception as exc:  # no JetStream, or no such bucket: live events only
                log.warning("kv_unavailable", bucket=bucket, error=repr(exc), note="showing live events only")
            while True:
                msg = await sub.next_msg(timeout=None)
                event = StateEvent.from_dict(json.loads(msg.data))
                key = (event.backend, event.instance)
                restarted = event.seq == 0 and last.get(key, -1) > 0  # same instance id, new process
                if last.get(key, -1) >= event.seq and not restarted:
                    continue
                last[key] = event.seq
                yield event
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class AudioStream:
    """An async iterator over one streamed reply; see :meth:`TtsClient.stream`."""

    def __init__(self, client: TtsClient, request: SynthesisRequest, timeout_s: float) -> None:
        self._client = client
        self._request = request
        self._timeout_s = timeout_s
        self._exchange: Any = None
        self._sub: Any = None
        self.request_id = ""
        self.headers: dict[str, str] = {}  # the first audio message's: backend, voice, content type...
        self.end_headers: dict[str, str] = {}  # the end message's: totals and timings
        self.ended = False
        self._attempt = 0
        self._heard = False
        # before its first audio a stream may be sent again (busy, not ready, silent responder), within this
        self._retry_deadline = time.monotonic() + timeout_s + request.wait_ms / 1000

    @property
    def timings(self) -> list[dict[str, int]]:
        return parse_timings(self.end_headers)

    @property
    def content_type(self) -> str:
        return self.headers.get(Header.CONTENT_TYPE.value, "")

    def __aiter__(self) -> AudioStream:
        return self

    async def __aenter__(self) -> AudioStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __anext__(self) -> StreamChunk:
        if self.ended:
            raise StopAsyncIteration
        while True:
            try:
                return await self._read()
            except StopAsyncIteration:
                raise
            except TtsError as error:
                delay = None if self.headers else self._client._retry_delay(error, self._attempt, self._retry_deadline)
                await self.aclose()
                if delay is None:
                    raise
            except BaseException:
                await self.aclose()
                raise
            await asyncio.sleep(delay)  # nothing reached the caller yet: send it again
            self._attempt += 1
            self.ended = False

    async def _read(self) -> StreamChunk:
        if self._exchange is None:
            await self._client._wait_sendable(self._retry_deadline)
            self._exchange = self._client._exchange(self._request)
            self._sub, self.request_id = await self._exchange.__aenter__()
            self._heard = False
        wait = self._timeout_s + (self._request.wait_ms / 1000 if not self.headers else 0)
        timer = StallTimer(wait, self._client.heartbeat_ms)
        timer.heard = self._heard
        while True:
            msg = await self._client._next(self._sub, timer, self.request_id)
            self._heard = True
            headers = dict(msg.headers or {})
            kind = classify(headers, msg.data)
            if kind is ReplyKind.STATUS:
                continue
            if kind is ReplyKind.ERROR:  # the end message follows; nothing more to read
                self.ended = True
                raise_for_error(headers, msg.data)
            if kind is ReplyKind.END:
                self.end_headers = headers
                self.ended = True
                await self._close()
                raise StopAsyncIteration
            if not self.headers:
                self.headers = headers
            return chunk_from(headers, msg.data)

    async def aclose(self) -> None:
        """Stop: a stream not yet ended is cancelled on ``tts.cancel``."""
        if self._exchange is not None and not self.ended:
            self.ended = True
            with contextlib.suppress(Exception):
                await self._client._tell_cancel(self.request_id)
        await self._close()

    async def _close(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.__aexit__(None, None, None)
