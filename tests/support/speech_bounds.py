"""Where speech is in a reply's audio, from the PCM's energy alone: what word timings are checked against."""

from __future__ import annotations

import numpy as np

FRAME_MS = 10
SILENCE_DB = 35.0  # a 10 ms frame this far below the loudest frame is silence


def speech_bounds_ms(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """The first and last moments of speech: the first frame loud enough, and the end of the last one."""
    frame = rate * FRAME_MS // 1000
    count = samples.size // frame
    frames = samples[: count * frame].astype(np.float64).reshape(count, frame)
    rms = np.sqrt((frames**2).mean(axis=1)) + 1e-9
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -SILENCE_DB)
    if loud.size == 0:
        raise AssertionError("no speech in the audio")
    return float(loud[0] * FRAME_MS), float((loud[-1] + 1) * FRAME_MS)
