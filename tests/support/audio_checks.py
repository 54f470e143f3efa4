"""Listening to replies in tests: decode any format with PyAV, measure length and pitch."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # int16 mono
    rate: int

    @property
    def duration_ms(self) -> float:
        return self.samples.size / self.rate * 1000


def decode(data: bytes, fmt: str | None = None) -> Decoded:
    """Every sample a player would play (priming and padding the container declares are trimmed)."""
    parts: list[np.ndarray] = []
    rate = 0
    with av.open(io.BytesIO(data), format=fmt) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            array = frame.to_ndarray()
            if array.dtype.kind == "f":
                array = (array * 32767).clip(-32768, 32767)
            parts.append(array.reshape(array.shape[0], -1)[0].astype(np.int16))
    return Decoded(np.concatenate(parts) if parts else np.zeros(0, np.int16), rate)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)
