"""Any audio file PyAV (FFmpeg) reads, to mono float samples at one rate, with bounds; and float resampling.

The watermark detector takes files from callers (``tts.detect``, ``tts-actor detect``): the bytes are bounded
by the caller's limit before they get here, and the decoded length by ``max_s``, so a small file that
decodes to hours of audio is refused instead of filling memory.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


class UndecodableAudio(ValueError):
    """The bytes are not audio FFmpeg can read, or decode to more than the bound."""


def _frames(frames: list[Any]) -> list[np.ndarray]:
    return [frame.to_ndarray().reshape(-1) for frame in frames]


def resample_float(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Float mono samples to another rate with FFmpeg's resampler: aligned, ``len * out/in`` samples."""
    import av

    if in_rate == out_rate or not len(samples):
        return samples.astype(np.float32, copy=False)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=out_rate)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = in_rate
    parts = _frames(resampler.resample(frame)) + _frames(resampler.resample(None))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def decode_mono(data: bytes, rate: int, max_s: float) -> np.ndarray:
    """The first audio stream of ``data`` as mono float32 at ``rate``; :class:`UndecodableAudio` otherwise."""
    import av

    limit = int(max_s * rate)
    parts: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for part in _frames(resampler.resample(frame)):
                    parts.append(part)
                    total += len(part)
                if total > limit:
                    raise UndecodableAudio(f"the audio lasts more than {max_s:.0f} s")
            parts += _frames(resampler.resample(None))
    except UndecodableAudio:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:  # PyAV's errors derive from these
        raise UndecodableAudio(f"not audio FFmpeg can read: {type(exc).__name__}: {exc}") from exc
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if not len(samples):
        raise UndecodableAudio("the file holds no audio samples")
    return samples
