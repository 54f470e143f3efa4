"""A small asyncio client for the service: what the translator (and the CLI) use.

Synthesis replies may come as several chunks on one reply subject; the client
subscribes to its own inbox, sends the request there and reassembles them.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import MaxPayloadError
from nats.errors import TimeoutError as NatsTimeoutError

from statemachine import StateEvent
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.logs import get_logger
from tts_actor.messages import Header, SynthesisRequest
from tts_actor.telemetry import inject_headers

log = get_logger(__name__)


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


@dataclass
class TtsClient:
    nc: Client
    prefix: str = "tts"
    timeout_s: float = 30.0
    _ctl_timeout_s: float = field(default=5.0)

    def subject(self, *parts: str) -> str:
        return ".".join((self.prefix, *parts))

    async def synthesize(self, request: SynthesisRequest, timeout_s: float | None = None) -> SynthesisReply:
        """Send one request; returns the reassembled audio or raises :class:`TtsError`."""
        timeout = (timeout_s or self.timeout_s) + request.wait_ms / 1000
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            payload = request.to_json()
            try:
                await self.nc.publish(self.subject("synthesize"), payload, reply=inbox, headers=inject_headers())
            except MaxPayloadError:
                raise TtsError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"request is {len(payload)} bytes; the NATS server carries at most {self.nc.max_payload}",
                    "Send shorter text or reference audio, or raise max_payload in the server's config.",
                ) from None
            first = await self._next(sub, timeout)
            raise_for_error(first.headers, first.data)
            headers = dict(first.headers or {})
            count = int(headers.get(Header.CHUNK_COUNT.value, "1"))
            parts = [first.data]
            for expected in range(1, count):
                msg = await self._next(sub, timeout)
                raise_for_error(msg.headers, msg.data)
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
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()

    async def _next(self, sub: Any, wait_s: float) -> Any:
        try:
            return await sub.next_msg(timeout=wait_s)
        except NatsTimeoutError:
            raise TtsError(
                ErrorCode.SYNTHESIS_TIMEOUT,
                f"no reply within {wait_s:.1f} s",
                "Check `tts-actor status`; raise the client timeout for very long texts.",
            ) from None

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
                    if entry.value:  # the same event sits under <backend> and <backend>.<instance>
                        event = StateEvent.from_dict(json.loads(entry.value))
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
