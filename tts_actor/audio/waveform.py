"""The waveform a chat app draws before anyone presses play, from the PCM on its way to the encoder.

Peaks are kept per block of :data:`BLOCK` samples as the segments pass (no second decode), and
reduced at the end to the number of points the caller asked for: each point is the peak of its
slice of the audio, scaled to 0-255. It covers the reply's whole timeline, pauses included.
"""

from __future__ import annotations

import base64

import numpy as np

BLOCK = 32  # samples per kept peak: 1.5 ms at 22 kHz, fine enough for 256 points of a 0.4 s reply
DEFAULT_POINTS = 64
POINTS_RANGE = (16, 256)
CACHED_POINTS = 256  # what the audio cache keeps; fewer points are reduced from it


class Waveform:
    """Running peaks of 16-bit PCM; :meth:`points` at any time."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._rest = np.zeros(0, np.int32)

    def add(self, pcm: bytes) -> None:
        samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
        if len(self._rest):
            samples = np.concatenate((self._rest, samples))
        whole = len(samples) - len(samples) % BLOCK
        if whole:
            self._blocks.append(samples[:whole].reshape(-1, BLOCK).max(axis=1))
        self._rest = samples[whole:]

    def peaks(self) -> np.ndarray:
        parts = [*self._blocks, self._rest.max(keepdims=True)] if len(self._rest) else self._blocks
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def points(self, count: int) -> bytes:
        """``count`` bytes: the peak of each slice of the audio, 0-255 (full scale is 255)."""
        scaled = np.minimum(255, np.round(reduce_peaks(self.peaks(), count) * 255 / 32767)).astype(np.uint8)
        return scaled.tobytes()


def reduce_peaks(peaks: np.ndarray, count: int) -> np.ndarray:
    """The maximum over each of ``count`` equal slices; a slice shorter than one peak takes the peak it falls in."""
    if not len(peaks):
        return np.zeros(count, peaks.dtype)
    starts = np.minimum(np.arange(count) * len(peaks) // count, len(peaks) - 1)
    return np.maximum.reduceat(peaks, starts)


def fewer_points(waveform: bytes, count: int) -> bytes:
    """A waveform of more points reduced to ``count`` (a cached reply's): exact when ``count`` divides it."""
    return reduce_peaks(np.frombuffer(waveform, np.uint8), count).astype(np.uint8).tobytes()


def encode(points: bytes) -> str:
    return base64.b64encode(points).decode()


def decode(header: str) -> bytes:
    return base64.b64decode(header)
