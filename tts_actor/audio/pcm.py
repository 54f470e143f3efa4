"""PCM and WAV encoding (16-bit mono), with the standard library only."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tts_actor.audio.words import WordSpan


@dataclass(frozen=True)
class Audio:
    """Signed 16-bit little-endian mono PCM and its rate.

    ``words``: where each word of the engine's text is in this audio, when the request asked for word timings and
    the engine knows them; else None, and ``words_missing`` says why (``tts_actor.audio.words``).
    """

    pcm: bytes
    sample_rate: int
    words: tuple[WordSpan, ...] | None = None
    words_missing: str | None = None

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    def to_wav(self) -> bytes:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(self.pcm)
        return buffer.getvalue()


def float_to_pcm16(samples: object) -> bytes:
    """Float samples in [-1, 1] (any array-like numpy accepts) to 16-bit PCM."""
    import numpy as np

    array = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (array * 32767.0).astype("<i2").tobytes()


def read_wav(data: bytes) -> Audio:
    """Parse a WAV (mono or stereo, 16-bit) into mono 16-bit :class:`Audio`."""
    with wave.open(io.BytesIO(data), "rb") as source:
        if source.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit samples, got {8 * source.getsampwidth()}-bit")
        frames = source.readframes(source.getnframes())
        channels = source.getnchannels()
        rate = source.getframerate()
    if channels == 1:
        return Audio(frames, rate)
    import numpy as np

    stereo = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
    return Audio(stereo.mean(axis=1).astype("<i2").tobytes(), rate)
