"""A synthesis job as the actor runs it: segments, where each one's audio goes, and when to stop.

The actor makes one engine call per segment and checks :class:`JobControl` between
them, so a caller who cancels or whose deadline passes frees the backend at the next
segment boundary. The audio goes down into the job's :class:`SegmentSink`; what the sink
does with it (encoding, caching, publishing) is not the actor's business.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import context as otel_context

from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.backends.base import Voice
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import Priority, SynthesisRequest


@dataclass
class JobControl:
    """Cancel flag and deadline of one request, shared by the service and the actor."""

    request_id: str
    deadline: float | None = None  # time.monotonic() after which no new segment starts
    deadline_ms: int | None = None
    cancelled: bool = False
    voice_erased: bool = False  # its cloned voice was deleted while it ran (set with ``cancelled``)

    def stop_error(self, backend: str | None = None) -> TtsError | None:
        """Why the job must stop now, or None to go on."""
        if self.voice_erased:
            return TtsError(
                ErrorCode.UNKNOWN_VOICE,
                f"the voice of request {self.request_id} was deleted while it was spoken; the rest was not spoken",
                "Nothing to fix: a deleted voice is gone; use another voice.",
                backend=backend,
            )
        if self.cancelled:
            return TtsError(
                ErrorCode.CANCELLED,
                f"request {self.request_id} was cancelled on tts.cancel",
                "Nothing to fix: send the request again if you still want the audio.",
                backend=backend,
            )
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return TtsError(
                ErrorCode.SYNTHESIS_TIMEOUT,
                f"the request's deadline_ms={self.deadline_ms} passed; the rest of the text was not spoken",
                "Send a larger deadline_ms, shorter text, or stream the reply to get audio sooner.",
                backend=backend,
            )
        return None


class SegmentSink(Protocol):
    """Where a job's audio goes, segment by segment, handed down by the actor's job runner."""

    async def accept(self, segment: Segment, audio: Audio) -> None:
        """Take one segment's audio; the runner awaits this before the next engine call (the sink paces it)."""


@dataclass
class SynthesisJob:
    """One request for an actor's inbox."""

    request: SynthesisRequest
    voice: Voice
    segments: list[Segment]
    sink: SegmentSink  # awaited on the event loop after each segment's engine call
    control: JobControl
    future: asyncio.Future[None]  # settled once every segment is done, or with the error that stopped it
    trace_context: otel_context.Context | None = None
    queued_ns: int = field(default_factory=time.time_ns)
    # the runner's progress through it: a job is served one segment at a time and queued again in between
    next_segment: int = 0  # the index in ``segments`` of the next engine call
    timeout_at: float | None = None  # loop time when TTS_SYNTHESIS_TIMEOUT_S runs out, set at its first segment
    held_s: float = 0.0  # wall seconds its segments held a worker so far
    # estimated seconds of audio per segment (the adapter's spoken_cost), computed once a deadline asks
    audio_estimate_s: list[float] | None = None

    @property
    def started(self) -> bool:
        """At least one segment ran: it keeps its place and is not refused as a queued job is."""
        return self.next_segment > 0

    @property
    def priority(self) -> Priority:
        return self.request.priority
