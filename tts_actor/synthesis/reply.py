"""The audio path's last stage: the encoded file as reply messages, through the one framer.

What the headers say about the audio (format, rate, length, timings) is taken from the encoder;
how the bytes are cut into messages is :class:`tts_actor.wire.framing.Framer`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping

from tts_actor.audio import waveform
from tts_actor.audio.encoding import SpeechEncoder, Timing, timings_json, word_timings_json
from tts_actor.errors import TtsError
from tts_actor.observability import metrics
from tts_actor.wire.framing import Framer
from tts_actor.wire.headers import Header


def audio_headers(encoder: SpeechEncoder) -> dict[str, str]:
    """What the file is: its content type and rate, and that it is synthetic speech."""
    assert encoder.codec is not None
    return {
        Header.CONTENT_TYPE.value: encoder.codec.content_type,
        Header.SAMPLE_RATE.value: str(encoder.codec.sample_rate),
        Header.SYNTHETIC.value: "true",
    }


def audio_totals(encoder: SpeechEncoder) -> dict[str, str]:
    """How long it is, where each segment is, its waveform: known once every segment was encoded."""
    return {
        Header.DURATION_MS.value: str(encoder.duration_ms),
        Header.SEGMENT_COUNT.value: str(encoder.segment_count),
        Header.TIMINGS.value: timings_json(encoder.timings),
        Header.WAVEFORM.value: waveform.encode(encoder.waveform_bytes()),
    }


class ReplySink:
    """Encoded audio into messages: a stream's as it comes, then its end; a whole reply's at once."""

    def __init__(
        self, framer: Framer, encoder: SpeechEncoder, first: Mapping[str, str], started: float, backend: str
    ) -> None:
        self.framer = framer
        self.encoder = encoder
        self.started = started
        self.backend = backend
        self.first = dict(first)  # the first message's: backend, voice, language, cache, fallback
        self.first_audio_s: float | None = None

    async def audio(self, data: bytes, timing: Timing) -> None:
        if not self.framer.messages:
            self.framer.first = self.first | audio_headers(self.encoder)
        segment = {
            Header.SEGMENT_INDEX.value: str(timing.index),
            Header.SEGMENT_START_MS.value: str(timing.start_ms),
            Header.SEGMENT_END_MS.value: str(timing.end_ms),
        }
        await self.framer.stream(data, segment)
        self._first_sent()

    async def done(self, whole: bytes | None) -> None:
        if self.encoder.word_timings:  # before the audio of a whole reply, before a stream's end
            await self.framer.timings(word_timings_json(self.encoder.timings))
        if whole is None:
            await self.framer.end(self.totals())
            return
        self.framer.first = self.first | audio_headers(self.encoder)
        await self.framer.whole(whole, self.totals())
        self._first_sent()

    async def fail(self, error: TtsError, stream: bool) -> None:
        """The error; a stream's, then its end message with what was sent."""
        await self.framer.fail(error, stream, self.totals())

    def totals(self) -> dict[str, str]:
        totals = audio_totals(self.encoder)
        if self.first_audio_s is not None:
            totals[Header.FIRST_AUDIO_MS.value] = str(round(self.first_audio_s * 1000))
        return totals

    def _first_sent(self) -> None:
        if self.first_audio_s is None and self.framer.first_sent_at is not None:
            self.first_audio_s = self.framer.first_sent_at - self.started
            metrics.FIRST_AUDIO_SECONDS.labels(self.backend).observe(self.first_audio_s)
