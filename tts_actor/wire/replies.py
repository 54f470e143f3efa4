"""Audio replies as a caller reads them (the messages themselves are made by :mod:`tts_actor.wire.framing`).

The reader classifies each message by its headers (audio, error, end, status) so that
messages of a kind it does not use (acks, heartbeats: a ``Tts-Status`` header) are skipped.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from tts_actor.wire.headers import Header


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


class TimingParts:
    """A reply's word timings (``Tts-Timings-Part`` messages) put back together; None until every part came."""

    def __init__(self) -> None:
        self._parts: dict[int, bytes] = {}
        self._count = 0

    def take(self, headers: dict[str, str], data: bytes) -> bool:
        """Keep ``data`` when the message is a timings part; False for any other message."""
        raw = headers.get(Header.TIMINGS_PART.value)
        if raw is None:
            return False
        index, _, count = raw.partition("/")
        if index.isdigit() and count.isdigit() and int(index) < int(count):
            self._parts[int(index)] = data
            self._count = int(count)
        return True

    def result(self) -> list[dict[str, Any]] | None:
        """Each segment with its ``words`` (or ``timings_unavailable``); None without every part, or unreadable."""
        if not self._count or len(self._parts) != self._count:
            return None
        try:
            timings = json.loads(b"".join(self._parts[i] for i in range(self._count)))
        except ValueError:
            return None
        return timings if isinstance(timings, list) else None


def parse_waveform(headers: dict[str, str]) -> bytes | None:
    """``Tts-Waveform``: one byte per point, each the peak of its slice of the audio (0-255); None when absent."""
    raw = headers.get(Header.WAVEFORM.value)
    if not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def chunk_from(headers: dict[str, str], data: bytes) -> StreamChunk:
    def number(name: Header) -> int:
        return int(headers.get(name.value, "-1"))

    return StreamChunk(
        data, number(Header.SEGMENT_INDEX), number(Header.SEGMENT_START_MS), number(Header.SEGMENT_END_MS), headers
    )
