"""The reply's audio path, as a chain of sinks the pipeline assembles; audio only ever flows down it.

engine -> :class:`QueuedSink` (the job's sink; the actor awaits it) -> :class:`EncodeStage` (the inaudible watermark
on the PCM when the engine does not mark its own, then PCM to file bytes and timings) -> :class:`CacheTee` (keeps a
copy for the audio cache) -> the reply (:class:`tts_actor.synthesis.reply.ReplySink`, messages through
:class:`tts_actor.wire.framing.Framer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tts_actor.audio import watermark
from tts_actor.audio.encoding import SpeechEncoder, Timing
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.observability.tracing import tracer
from tts_actor.synthesis.flights import Flight
from tts_actor.synthesis.reply import audio_headers

Headers = Mapping[str, str] | None


class EncodedSink(Protocol):
    """Takes a request's file as it is encoded."""

    async def audio(self, data: bytes, timing: Timing) -> None:
        """A stream's next bytes; ``timing``: the segment they belong to."""

    async def done(self, whole: bytes | None) -> None:
        """The end: a whole reply's file, or None for a stream (its bytes came through :meth:`audio`)."""


@dataclass(frozen=True)
class SegmentAudio:
    segment: Segment
    audio: Audio


class QueuedSink:
    """The job's :class:`~tts_actor.lifecycle.jobs.SegmentSink`: each segment's audio queued for the encoder.

    With ``first_waits`` (a stream of several segments) the first segment is taken only once it is sent, so that its
    encoding does not share the CPU with the second segment's synthesis: first audio is what a streaming caller waits
    for. The audio is queued before any wait, so a runner that stops waiting (its 5 s bound) loses nothing.
    """

    def __init__(self, first_waits: bool) -> None:
        self.queue: asyncio.Queue[SegmentAudio] = asyncio.Queue()
        self.first_out = asyncio.Event()
        self._first_waits = first_waits

    async def accept(self, segment: Segment, audio: Audio) -> None:
        self.queue.put_nowait(SegmentAudio(segment, audio))
        if segment.index == 0 and self._first_waits:
            await self.first_out.wait()

    async def drain(self, done: asyncio.Future[None]) -> AsyncIterator[SegmentAudio]:
        """Each segment's audio as the actor hands it over, until the job is settled (raising its error)."""
        while True:
            if not self.queue.empty():
                yield self.queue.get_nowait()
                continue
            if done.done():
                done.result()  # the error that stopped the job, if any
                return
            getter = asyncio.ensure_future(self.queue.get())
            try:
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()


class EncodeStage:
    """PCM segments to the file's bytes: a stream's go down as they are encoded, a whole reply's at the end."""

    def __init__(
        self,
        encoder: SpeechEncoder,
        stream: bool,
        out: EncodedSink,
        audio_format: str,
        mark: Callable[[Audio], Awaitable[Audio]] | None = None,
    ) -> None:
        """``mark``: the watermark, applied to each segment's PCM before it is encoded (off the event loop)."""
        self.encoder = encoder
        self.mark = mark
        self.stream = stream
        self.out = out
        self.audio_format = audio_format
        self._kept: list[bytes] = []
        self._last: Segment | None = None

    async def add(self, segment: Segment, audio: Audio) -> None:
        pieces = self.encoder.pieces(segment, audio)
        if not pieces:
            return
        self._last = segment
        attributes = {"tts.segment": segment.index, "tts.format": self.audio_format}
        with tracer().start_as_current_span("tts.encode", attributes=attributes):
            async for pcm in self._marked(pieces, audio.sample_rate):  # a first piece goes before the second is made
                data = await asyncio.to_thread(self.encoder.encode, pcm)
                if self.stream:
                    await self.out.audio(data, self.encoder.timing(segment.index))
                else:
                    self._kept.append(data)

    async def _marked(self, pieces: list[bytes], rate: int) -> AsyncIterator[bytes]:
        """The pieces with the watermark. A stream's first piece is marked with a little of what follows, and goes
        out before the whole segment is marked (first audio waits for 0.9 s of marking, not the sentence's); the
        rest then starts from that early mark and fades into the whole segment's within 20 ms: no seam to hear.
        """
        if self.mark is None:
            for pcm in pieces:
                yield pcm
            return
        if len(pieces) == 1:
            yield (await self._mark(pieces[0], rate)).pcm
            return
        head, rest = pieces
        early = await self._mark(head + rest[: 2 * int(rate * watermark.HEAD_CONTEXT_S)], rate)
        yield early.pcm[: len(head)]
        whole = await self._mark(head + rest, rate)
        yield watermark.spliced(early.pcm[len(head) :], whole.pcm[len(head) :], int(rate * watermark.CROSSFADE_S))

    async def _mark(self, pcm: bytes, rate: int) -> Audio:
        assert self.mark is not None
        with tracer().start_as_current_span("tts.watermark", attributes={"tts.seconds": len(pcm) / 2 / rate}):
            return await self.mark(Audio(pcm, rate))

    async def finish(self) -> None:
        tail = await asyncio.to_thread(self.encoder.finish)
        if not self.stream:
            await self.out.done(self.encoder.whole(b"".join(self._kept) + tail))
            return
        if self._last is not None:
            await self.out.audio(tail, self.encoder.timing(self._last.index))
        await self.out.done(None)


class CacheTee:
    """Passes the file on and keeps a copy: what the audio cache stores once the reply is out.

    With a ``flight``, a stream's parts also go to the requests that joined this synthesis, as they are sent.
    """

    def __init__(
        self, out: EncodedSink, encoder: SpeechEncoder, key: str, flight: Flight | None = None, first: Headers = None
    ) -> None:
        self.out = out
        self.encoder = encoder
        self.key = key
        self.flight = flight
        self.first = dict(first or {})  # what the joiners' first message says besides the audio's own headers
        self._parts: list[bytes] = []
        self.file: bytes | None = None  # the whole file, once the reply went out completely

    async def audio(self, data: bytes, timing: Timing) -> None:
        await self.out.audio(data, timing)
        self._parts.append(data)
        if self.flight is not None:
            self.flight.add(data, timing, self.first | audio_headers(self.encoder))

    async def done(self, whole: bytes | None) -> None:
        await self.out.done(whole)
        self.file = whole if whole is not None else self.encoder.whole(b"".join(self._parts))
