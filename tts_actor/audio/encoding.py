"""PCM segments in, encoded bytes and timings out: the first stage of the reply's audio path.

One file per request, written segment by segment: the pause between segments travels with the
segment before it, each segment's place in the text and in the audio is a :class:`Timing`, and a
stream's first segment is cut so that its first half second is encoded (and can be sent) before the
rest. Nothing here knows about NATS; :mod:`tts_actor.wire.framing` puts the bytes into messages.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tts_actor.audio import codecs
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segment_encoder import SegmentEncoder
from tts_actor.audio.segmenter import Segment
from tts_actor.audio.tags import Mark
from tts_actor.audio.waveform import DEFAULT_POINTS, Waveform
from tts_actor.audio.words import ENGINE_REPORTS_NONE
from tts_actor.errors import ErrorCode, TtsError

FIRST_PIECE_S = 0.5  # a stream's first piece: this much audio, encoded and sent before the rest of its segment


@dataclass(frozen=True)
class WordTiming:
    """Where one word is: ``[text_start, text_end)`` in the request's text, ``[start_ms, end_ms)`` in the file."""

    text_start: int
    text_end: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Timing:
    """Where one segment's speech is, in the text and in the audio; with word timings asked, its words too.

    ``words`` is None when they were not asked for, or when the engine does not know them: then
    ``words_missing`` says why (``tts_actor.audio.words``), and the reply says ``timings_unavailable``.
    """

    index: int
    text_start: int
    text_end: int
    start_ms: int
    end_ms: int
    words: tuple[WordTiming, ...] | None = None
    words_missing: str | None = None

    def to_dict(self) -> dict[str, int]:
        """The segment alone: what ``Tts-Timings`` carries."""
        return {
            "index": self.index,
            "text_start": self.text_start,
            "text_end": self.text_end,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }

    def to_full_dict(self) -> dict[str, Any]:
        """The segment with its words, or why it has none: what the timings part carries."""
        entry: dict[str, Any] = dict(self.to_dict())
        if self.words is not None:
            entry["words"] = [dataclasses.asdict(word) for word in self.words]
        else:
            entry["timings_unavailable"] = self.words_missing or ENGINE_REPORTS_NONE
        return entry


def timings_json(timings: list[Timing]) -> str:
    return json.dumps([t.to_dict() for t in timings], separators=(",", ":"))


def word_timings_json(timings: list[Timing]) -> bytes:
    """Every segment with its words: the body of a reply's timings part (``Tts-Timings`` stays per segment)."""
    return json.dumps([t.to_full_dict() for t in timings], separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class FormatRequest:
    """What the caller asked the file to be."""

    format: str
    sample_rate: int | None = None
    bitrate: int | None = None
    mark: Mark | None = None  # the synthetic-speech comment in the container's metadata; None: none
    waveform_points: int = DEFAULT_POINTS


class SpeechEncoder:
    """One request's file: opened on the first audio (the engine's rate is known then), fed segment by segment."""

    def __init__(
        self,
        wanted: FormatRequest,
        silence_ms: int,
        segment_count: int,
        backend: str,
        split_first: bool,
        word_timings: bool = False,
    ) -> None:
        self.wanted = wanted
        self.word_timings = word_timings  # the request asked for each word's time
        self.silence_ms = silence_ms
        self.segment_count = segment_count
        self.backend = backend
        self._split_first = split_first  # streams: the first half second goes out before the rest
        self.codec: SegmentEncoder | None = None
        self.timings: list[Timing] = []
        self.position_samples = 0  # at the engine's rate, silences included
        self.waveform = Waveform()  # peaks of the PCM on its way to the codec: no second decode

    @property
    def audio_seconds(self) -> float:
        return self.position_samples / self.codec.in_rate if self.codec else 0.0

    @property
    def duration_ms(self) -> int:
        return round(self.audio_seconds * 1000)

    def waveform_bytes(self) -> bytes:
        """The reply's waveform: ``waveform_points`` peaks over its whole timeline, 0-255."""
        return self.waveform.points(self.wanted.waveform_points)

    def timing(self, index: int) -> Timing:
        return next(t for t in reversed(self.timings) if t.index == index)

    def pieces(self, segment: Segment, audio: Audio) -> list[bytes]:
        """Record the segment's timing; the PCM pieces to encode, in order (none for a silent first segment)."""
        if self.codec is None:
            if not audio.pcm:
                self.timings.append(self._timing(segment, audio, 0, 0))
                return []
            wanted = self.wanted
            self.codec = codecs.open_encoder(
                wanted.format, audio.sample_rate, wanted.sample_rate, wanted.bitrate, wanted.mark
            )
        elif audio.sample_rate != self.codec.in_rate:
            raise TtsError(
                ErrorCode.INTERNAL,
                f"{self.backend} changed its sample rate from {self.codec.in_rate} to {audio.sample_rate} mid-text",
                "Report this with the service log.",
            )
        samples = len(audio.pcm) // 2
        start = self.position_samples
        self.timings.append(self._timing(segment, audio, start, samples))
        pcm = audio.pcm
        if samples and segment.index < self.segment_count - 1:  # the pause after it travels with it
            gap = int(self.codec.in_rate * self.silence_ms / 1000)
            pcm += bytes(2 * gap)
            samples += gap
        self.position_samples += samples
        self.waveform.add(pcm)
        if self._split_first:
            self._split_first = False
            head = 2 * int(self.codec.in_rate * FIRST_PIECE_S)
            return [pcm[:head], pcm[head:]]
        return [pcm]

    def encode(self, pcm: bytes) -> bytes:
        """Blocking: run it off the event loop."""
        assert self.codec is not None
        return self.codec.encode(pcm)

    def finish(self) -> bytes:
        """Blocking: the file's last bytes; an error when no audio came out at all."""
        if self.codec is None:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                f"the text has nothing {self.backend} can speak (no audio came out)",
                "Send words, not only punctuation or symbols.",
                backend=self.backend,
            )
        return self.codec.finish()

    def whole(self, data: bytes) -> bytes:
        """The bytes written so far as a whole file: what a stream leaves unknown (lengths) filled in."""
        return self.codec.finish_whole(data) if self.codec is not None else data

    def _ms(self, samples: int) -> int:
        return round(samples * 1000 / self.codec.in_rate) if self.codec is not None else 0

    def _timing(self, segment: Segment, audio: Audio, start: int, samples: int) -> Timing:
        """The segment's timing; its words moved from the engine's text and audio into the request's and the file's."""
        timing = Timing(segment.index, segment.start, segment.end, self._ms(start), self._ms(start + samples))
        if not self.word_timings:
            return timing
        if audio.words is None:
            return dataclasses.replace(timing, words_missing=audio.words_missing or ENGINE_REPORTS_NONE)
        words = tuple(
            WordTiming(
                min(segment.start + w.text_start, segment.end),
                min(segment.start + w.text_end, segment.end),
                self._ms(start + min(w.start_sample, samples)),
                self._ms(start + min(w.end_sample, samples)),
            )
            for w in audio.words
            if segment.start + w.text_start < segment.end  # not the padding an engine's minimum adds
        )
        return dataclasses.replace(timing, words=words)
