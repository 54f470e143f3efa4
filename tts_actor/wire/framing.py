"""Every reply's messages: one framer for whole, chunked, streamed and cached audio, one end message, one error.

Protocol (docs/protocol.md, "Streaming"): a reply subject receives audio messages whose bodies are consecutive
byte ranges of one file. A whole reply carries every header on its first message and is cut into
chunks (``Tts-Chunk-Index``/``-Count``) only past ``max_payload``. A stream sends bytes as they are
encoded, each message naming its segment, then an empty-body end message with the totals and the
timings (NATS ADR-47, "request many"). An error is a structured message; a stream's error is
followed by its end message. No message, headers included, exceeds the server's ``max_payload``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping

from tts_actor.errors import TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import NAME_RE

Publish = Callable[[bytes, dict[str, str]], Awaitable[None]]
"""One message on the reply subject: body and headers. The only way replies leave the service."""

HEADER_ROOM = 8 * 1024  # bytes of max_payload kept free for the headers of an error reply
HEADER_SLACK = 512  # bytes for the protocol line and the header block's own framing
TIMINGS_STATUS = "timings"  # Tts-Status of a word-timings part: readers that do not want it skip it as status


def headers_size(headers: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items()) + 16


def error_headers(error: TtsError) -> dict[str, str]:
    return {
        Header.SERVICE_ERROR_CODE.value: str(error.service_status),
        Header.SERVICE_ERROR.value: error.message[:512].replace("\r", " ").replace("\n", " "),
        Header.ERROR_CODE.value: error.code.value,
        Header.CONTENT_TYPE.value: "application/json",
    }


def error_body(error: TtsError, room: int, request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """An error reply that fits in ``room`` bytes whatever the request echoed; with the request's id when known."""
    body = json.dumps(error.to_dict()).encode()
    if len(body) > room:
        error = dataclasses.replace(error, message=error.message[:500], detail=None)
        body = json.dumps(error.to_dict()).encode()
    headers = error_headers(error)
    if request_id:
        headers[Header.REQUEST_ID.value] = request_id
    return body, headers


def echoed_request_id(headers: Mapping[str, str] | None) -> str | None:
    """The caller's ``Tts-Request-Id`` when it is a usable name: replies sent before a job exists carry it."""
    wanted = (headers or {}).get(Header.REQUEST_ID.value, "")
    return wanted if NAME_RE.match(wanted) else None


def end_headers(
    totals: Mapping[str, str] | None = None,
    total_bytes: int = 0,
    chunks: int = 0,
    max_payload: int | None = None,
    request_id: str | None = None,
) -> dict[str, str]:
    """The stream's end message (empty body): the totals, and how many bytes and messages came before it."""
    headers = dict(totals or {})
    if request_id:  # on every message: the client reads only its own request's
        headers[Header.REQUEST_ID.value] = request_id
    headers |= {
        Header.STREAM_END.value: "1",
        Header.TOTAL_BYTES.value: str(total_bytes),
        Header.CHUNK_COUNT.value: str(chunks),
    }
    if max_payload is not None and headers_size(headers) > max_payload - HEADER_SLACK:  # thousands of segments
        headers[Header.TIMINGS.value] = "[]"
    return headers


class Framer:
    """One reply's messages: ``first`` rides on the first audio message; counts what went out."""

    def __init__(self, publish: Publish, max_payload: int, request_id: str | None = None) -> None:
        self.publish = publish
        self.max_payload = max_payload
        self.request_id = request_id
        self.first: dict[str, str] = {}  # headers of the first audio message (content type, backend, ...)
        self.sent_bytes = 0
        self.messages = 0
        self.first_sent_at: float | None = None  # time.perf_counter() when the first audio left

    async def stream(self, data: bytes, headers: Mapping[str, str]) -> None:
        """Bytes of a stream, in as many messages as ``max_payload`` needs; never an empty body (that is the end)."""
        offset = 0
        while offset < len(data):
            message = self._message(headers)
            part = data[offset : offset + self._room(message)]
            await self._send(part, message)
            offset += len(part)

    def room(self, headers: Mapping[str, str]) -> int:
        """How many bytes the next :meth:`stream` message with ``headers`` takes."""
        return self._room(self._message(headers))

    async def whole(self, data: bytes, headers: Mapping[str, str]) -> None:
        """A whole file: ``first`` and ``headers`` on the first message, chunks only past max_payload."""
        first = self.first | dict(headers) | {Header.TOTAL_BYTES.value: str(len(data))}
        if self.request_id is not None:
            first[Header.REQUEST_ID.value] = self.request_id
        first_room = max(1024, self.max_payload - headers_size(first) - 64 - HEADER_SLACK)
        room = max(1024, self.max_payload - 128 - HEADER_SLACK)
        count = 1 + max(0, -(-(len(data) - first_room) // room))
        first[Header.CHUNK_COUNT.value] = str(count)
        later = {Header.CHUNK_COUNT.value: str(count)}
        if self.request_id is not None:  # on every message: the client reads only its own request's
            later[Header.REQUEST_ID.value] = self.request_id
        offset = 0
        for index in range(count):
            part_headers = first if index == 0 else later
            size = first_room if index == 0 else room
            await self._send(data[offset : offset + size], {**part_headers, Header.CHUNK_INDEX.value: str(index)})
            offset += size

    async def timings(self, body: bytes) -> None:
        """The word timings JSON as status messages of its own (``Tts-Timings-Part: i/n``), cut at max_payload.

        Sent before a whole reply's audio and before a stream's end message: no header overflows with
        thousands of words, readers that do not ask for them skip them as status, and a relay passes them on.
        """
        room = max(1024, self.max_payload - 256 - HEADER_SLACK)
        count = max(1, -(-len(body) // room))
        for index in range(count):
            headers = {
                Header.STATUS.value: TIMINGS_STATUS,
                Header.TIMINGS_PART.value: f"{index}/{count}",
                Header.CONTENT_TYPE.value: "application/json",
            }
            if self.request_id is not None:
                headers[Header.REQUEST_ID.value] = self.request_id
            await self.publish(body[index * room : (index + 1) * room], headers)

    async def end(self, totals: Mapping[str, str]) -> None:
        """The stream's end message, counting what this framer sent."""
        await self.publish(b"", end_headers(totals, self.sent_bytes, self.messages, self.max_payload, self.request_id))

    async def fail(self, error: TtsError, stream: bool, totals: Mapping[str, str] | None = None) -> None:
        """The structured error; a stream's, then its end message."""
        body, headers = error_body(error, self.max_payload - HEADER_ROOM, self.request_id)
        await self.publish(body, headers)
        if stream:
            await self.end(totals or {})

    def _message(self, headers: Mapping[str, str]) -> dict[str, str]:
        message = dict(headers)
        if self.request_id is not None:
            message[Header.REQUEST_ID.value] = self.request_id
        return self.first | message if not self.messages else message

    def _room(self, message: Mapping[str, str]) -> int:
        return max(1024, self.max_payload - headers_size(message) - HEADER_SLACK)

    async def _send(self, data: bytes, headers: dict[str, str]) -> None:
        await self.publish(data, headers)
        if self.first_sent_at is None:
            self.first_sent_at = time.perf_counter()
        self.sent_bytes += len(data)
        self.messages += 1
