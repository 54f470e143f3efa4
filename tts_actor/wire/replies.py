"""Audio replies over NATS: the writer the service feeds segment by segment, and the reader the client uses.

Protocol (docs/protocol.md, "Streaming"): a reply subject receives audio messages whose bodies are
consecutive byte ranges of one file; with ``"stream": true`` one or more per segment as soon
as it is encoded, then an empty-body end message carrying the totals and the timings (NATS
ADR-47, "request many"). An error part-way is the usual structured error message, then the
end message. Without ``stream`` the whole file goes out at the end, in chunks only past
``max_payload``. No message, headers included, exceeds the server's ``max_payload``.

The reader classifies each message by its headers (audio, error, end, status) so that
messages of a kind it does not use (acks, heartbeats: a ``Tts-Status`` header) are skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from tts_actor.audio import codecs
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.observability.tracing import tracer
from tts_actor.wire.messages import NAME_RE, Header, SynthesisRequest

log = get_logger(__name__)
Publish = Callable[[bytes, dict[str, str]], Awaitable[None]]
HEADER_SLACK = 512  # bytes for the protocol line and the header block's own framing
FIRST_PIECE_S = 0.5  # a stream's first message: this much audio, encoded and sent before the rest of its segment


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


def echoed_request_id(headers: dict[str, str] | None) -> str | None:
    """The caller's ``Tts-Request-Id`` when it is a usable name: replies sent before a job exists carry it."""
    wanted = (headers or {}).get(Header.REQUEST_ID.value, "")
    return wanted if NAME_RE.match(wanted) else None


def stream_end(request_id: str | None) -> dict[str, str]:
    """The (empty) end message of a stream that carried no audio."""
    end = {Header.STREAM_END.value: "1", Header.TOTAL_BYTES.value: "0", Header.CHUNK_COUNT.value: "0"}
    if request_id:
        end[Header.REQUEST_ID.value] = request_id
    return end


def headers_size(headers: dict[str, str]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.items()) + 16


@dataclass(frozen=True)
class Timing:
    """Where one segment's speech is, in the text and in the audio."""

    index: int
    text_start: int
    text_end: int
    start_ms: int
    end_ms: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def timings_json(timings: list[Timing]) -> str:
    return json.dumps([t.to_dict() for t in timings], separators=(",", ":"))


class ReplyWriter:
    """Encodes each segment's PCM as it comes and publishes it (stream) or keeps it (whole reply)."""

    def __init__(
        self,
        publish: Publish,
        request: SynthesisRequest,
        headers: dict[str, str],
        max_payload: int,
        silence_ms: int,
        segment_count: int,
        started: float,
        backend: str,
    ) -> None:
        self.publish = publish
        self.request = request
        self.headers = headers  # the first message's: backend, voice, language, request id, fallback
        self.max_payload = max_payload
        self.silence_ms = silence_ms
        self.segment_count = segment_count
        self.started = started
        self.backend = backend
        self.encoder: codecs.SegmentEncoder | None = None
        self.timings: list[Timing] = []
        self.position_samples = 0  # at the engine's rate, silences included
        self.sent_bytes = 0
        self.messages = 0
        self.first_audio_s: float | None = None
        self._kept: list[bytes] = []
        self._first_sent = False
        self._last_segment: Segment | None = None

    @property
    def audio_seconds(self) -> float:
        return self.position_samples / self.encoder.in_rate if self.encoder else 0.0

    def _ms(self, samples: int) -> int:
        assert self.encoder is not None
        return round(samples * 1000 / self.encoder.in_rate)

    async def add(self, segment: Segment, audio: Audio) -> None:
        """One segment's audio: its timing, its bytes (and for a stream, its messages)."""
        if self.encoder is None:
            if not audio.pcm:
                self.timings.append(Timing(segment.index, segment.start, segment.end, 0, 0))
                return
            self.encoder = codecs.open_encoder(
                self.request.format.value, audio.sample_rate, self.request.sample_rate, self.request.bitrate
            )
        elif audio.sample_rate != self.encoder.in_rate:
            raise TtsError(
                ErrorCode.INTERNAL,
                f"{self.backend} changed its sample rate from {self.encoder.in_rate} to {audio.sample_rate} mid-text",
                "Report this with the service log.",
            )
        samples = len(audio.pcm) // 2
        start = self.position_samples
        self.timings.append(
            Timing(segment.index, segment.start, segment.end, self._ms(start), self._ms(start + samples))
        )
        pcm = audio.pcm
        if samples and segment.index < self.segment_count - 1:  # the pause after it travels with it
            gap = int(self.encoder.in_rate * self.silence_ms / 1000)
            pcm += bytes(2 * gap)
            samples += gap
        self.position_samples += samples
        self._last_segment = segment
        pieces = [pcm]
        if self.request.stream and not self._first_sent:  # first audio: send a short head before the rest
            head = 2 * int(self.encoder.in_rate * FIRST_PIECE_S)
            pieces = [pcm[:head], pcm[head:]]
        with tracer().start_as_current_span(
            "tts.encode", attributes={"tts.segment": segment.index, "tts.format": self.request.format.value}
        ):
            for piece in pieces:
                await self._emit(await asyncio.to_thread(self.encoder.encode, piece), segment)

    async def _emit(self, data: bytes, segment: Segment | None) -> None:
        if not self.request.stream:
            self._kept.append(data)
            return
        seg_headers: dict[str, str] = {Header.REQUEST_ID.value: self.headers[Header.REQUEST_ID.value]}
        if segment is not None:
            timing = next(t for t in reversed(self.timings) if t.index == segment.index)
            seg_headers |= {
                Header.SEGMENT_INDEX.value: str(segment.index),
                Header.SEGMENT_START_MS.value: str(timing.start_ms),
                Header.SEGMENT_END_MS.value: str(timing.end_ms),
            }
        offset = 0
        while offset < len(data):  # never an empty body: that is the end message
            headers = seg_headers if self._first_sent else self._first_headers() | seg_headers
            room = max(1024, self.max_payload - headers_size(headers) - HEADER_SLACK)
            part = data[offset : offset + room]
            await self.publish(part, headers)
            self._mark_sent(len(part))
            offset += len(part)

    def _first_headers(self) -> dict[str, str]:
        assert self.encoder is not None
        return self.headers | {
            Header.CONTENT_TYPE.value: self.encoder.content_type,
            Header.SAMPLE_RATE.value: str(self.encoder.sample_rate),
        }

    def _mark_sent(self, size: int) -> None:
        if not self._first_sent:
            self._first_sent = True
            self.first_audio_s = time.perf_counter() - self.started
            metrics.FIRST_AUDIO_SECONDS.labels(self.backend).observe(self.first_audio_s)
        self.sent_bytes += size
        self.messages += 1

    def _totals(self) -> dict[str, str]:
        totals = {
            Header.REQUEST_ID.value: self.headers[Header.REQUEST_ID.value],
            Header.DURATION_MS.value: str(round(self.audio_seconds * 1000)),
            Header.SEGMENT_COUNT.value: str(self.segment_count),
            Header.TIMINGS.value: timings_json(self.timings),
        }
        if self.first_audio_s is not None:
            totals[Header.FIRST_AUDIO_MS.value] = str(round(self.first_audio_s * 1000))
        return totals

    async def finish(self) -> None:
        """The encoder's tail, then the end message (stream) or the whole file in chunks."""
        if self.encoder is None:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                f"the text has nothing {self.backend} can speak (no audio came out)",
                "Send words, not only punctuation or symbols.",
                backend=self.backend,
            )
        tail = await asyncio.to_thread(self.encoder.finish)
        if self.request.stream:
            await self._emit(tail, self._last_segment)
            await self.end()
            return
        data = self.encoder.finish_whole(b"".join(self._kept) + tail)
        await self._publish_whole(data)

    async def _publish_whole(self, data: bytes) -> None:
        """Today's reply: the first message holds every header; chunks only past max_payload."""

        async def publish(part: bytes, headers: dict[str, str]) -> None:
            await self.publish(part, headers)
            self._mark_sent(len(part))

        await publish_whole(publish, data, self._first_headers() | self._totals(), self.max_payload)

    async def end(self) -> None:
        """The stream's end message: empty body, totals and timings in the headers."""
        headers = self._totals() | {
            Header.STREAM_END.value: "1",
            Header.TOTAL_BYTES.value: str(self.sent_bytes),
            Header.CHUNK_COUNT.value: str(self.messages),
        }
        if headers_size(headers) > self.max_payload - HEADER_SLACK:  # thousands of tiny segments
            headers[Header.TIMINGS.value] = "[]"
        await self.publish(b"", headers)

    async def fail(self, error: TtsError) -> None:
        """The structured error; for a stream, then the end message."""
        body, headers = error_body(error, self.max_payload - 8 * 1024)
        await self.publish(body, headers | {Header.REQUEST_ID.value: self.headers[Header.REQUEST_ID.value]})
        if self.request.stream:
            await self.end()


@dataclass(frozen=True)
class SegmentAudio:
    segment: Segment
    audio: Audio


async def publish_whole(publish: Publish, data: bytes, headers: dict[str, str], max_payload: int) -> int:
    """A whole file as the reply: every header on the first message, chunks only past max_payload; the count."""
    headers = headers | {Header.TOTAL_BYTES.value: str(len(data))}
    first_room = max(1024, max_payload - headers_size(headers) - 64 - HEADER_SLACK)
    room = max(1024, max_payload - 128 - HEADER_SLACK)
    count = 1 + max(0, -(-(len(data) - first_room) // room))
    headers[Header.CHUNK_COUNT.value] = str(count)
    offset = 0
    later = {Header.CHUNK_COUNT.value: str(count)}
    if Header.REQUEST_ID.value in headers:  # on every message: the client reads only its own request's
        later[Header.REQUEST_ID.value] = headers[Header.REQUEST_ID.value]
    for index in range(count):
        part_headers = headers if index == 0 else later
        size = first_room if index == 0 else room
        await publish(data[offset : offset + size], {**part_headers, Header.CHUNK_INDEX.value: str(index)})
        offset += size
    return count


async def as_they_come(queue: asyncio.Queue[SegmentAudio], done: asyncio.Future[None]) -> AsyncIterator[SegmentAudio]:
    """Each segment's audio as the actor hands it over, until the job is settled (raising its error)."""
    while True:
        if not queue.empty():
            yield queue.get_nowait()
            continue
        if done.done():
            done.result()  # the error that stopped the job, if any
            return
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()


# --- the client's side -------------------------------------------------------------------------------


class ReplyKind(enum.Enum):
    AUDIO = "audio"
    ERROR = "error"
    END = "end"
    STATUS = "status"  # an ack or a heartbeat: no audio, skipped by readers that do not use it


def classify(headers: dict[str, str], data: bytes) -> ReplyKind:
    """What a message on a reply subject is, from its headers (and an empty body for the end)."""
    if headers.get("Status") == "503" or Header.SERVICE_ERROR_CODE.value in headers:
        return ReplyKind.ERROR
    if Header.STATUS.value in headers:
        return ReplyKind.STATUS
    if not data:
        return ReplyKind.END
    return ReplyKind.AUDIO


@dataclass(frozen=True)
class StreamChunk:
    """One streamed message: the next bytes of the file and the segment they belong to."""

    data: bytes
    index: int
    start_ms: int
    end_ms: int
    headers: dict[str, str] = field(default_factory=dict)


def parse_timings(headers: dict[str, str]) -> list[dict[str, int]]:
    raw = headers.get(Header.TIMINGS.value)
    return json.loads(raw) if raw else []


def chunk_from(headers: dict[str, str], data: bytes) -> StreamChunk:
    def number(name: Header) -> int:
        return int(headers.get(name.value, "-1"))

    return StreamChunk(
        data, number(Header.SEGMENT_INDEX), number(Header.SEGMENT_START_MS), number(Header.SEGMENT_END_MS), headers
    )
