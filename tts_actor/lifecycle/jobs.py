"""A synthesis job as the actor runs it: segments, where each one's audio goes, and when to stop.

The actor makes one engine call per segment and checks :class:`JobControl` between
them, so a caller who cancels or whose deadline passes frees the backend at the next
segment boundary. What happens to the audio (encoding, publishing) is the caller's
business, through ``on_audio``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import context as otel_context

from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.backends.base import Voice
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest


@dataclass
class JobControl:
    """Cancel flag and deadline of one request, shared by the service and the actor."""

    request_id: str
    deadline: float | None = None  # time.monotonic() after which no new segment starts
    deadline_ms: int | None = None
    cancelled: bool = False

    def stop_error(self, backend: str | None = None) -> TtsError | None:
        """Why the job must stop now, or None to go on."""
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


AudioCallback = Callable[[Segment, Audio], None]


@dataclass
class SynthesisJob:
    """One request for an actor's inbox."""

    request: SynthesisRequest
    voice: Voice
    segments: list[Segment]
    on_audio: AudioCallback  # called on the event loop after each segment's engine call
    control: JobControl
    future: asyncio.Future[None]  # settled once every segment is done, or with the error that stopped it
    trace_context: otel_context.Context | None = None
    queued_ns: int = field(default_factory=time.time_ns)
    # streams: set once the first segment's audio is out, so that its encoding does not share the CPU
    # with the second segment's synthesis (first audio is what a streaming caller waits for)
    first_audio_out: asyncio.Event | None = None
