"""Reference audio for voice cloning: validated from the request bytes, handed to an engine as a private temp file.

The engines want a path; the request carries bytes. A server path is never
accepted from a caller: the file is written here, readable by this process only,
and deleted when the call returns, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

from tts_actor.audio.pcm import Audio, read_wav
from tts_actor.errors import ErrorCode, TtsError

MIN_REFERENCE_S = 1.0
MAX_REFERENCE_S = 30.0
_FIX = "Send 5-20 s of speech as a mono 16-bit PCM WAV, base64-encoded in 'reference_audio'."


def _invalid(message: str) -> TtsError:
    return TtsError(ErrorCode.INVALID_REQUEST, message, _FIX)


def validate_reference(data: bytes, min_s: float = MIN_REFERENCE_S, max_s: float = MAX_REFERENCE_S) -> Audio:
    """Parse and bound the reference audio; raises ``invalid_request`` with a fix."""
    if not data.startswith(b"RIFF") or data[8:12] != b"WAVE":
        raise _invalid("reference_audio is not a WAV file (no RIFF/WAVE header)")
    try:
        audio = read_wav(data)
    except (wave.Error, EOFError, ValueError) as exc:
        raise _invalid(f"reference_audio is not a readable WAV: {exc}") from exc
    if audio.sample_rate < 8000:
        raise _invalid(f"reference_audio has a sample rate of {audio.sample_rate} Hz; at least 8000 Hz is needed")
    if audio.duration_s < min_s:
        raise _invalid(f"reference_audio lasts {audio.duration_s:.2f} s; at least {min_s:.0f} s is needed")
    if audio.duration_s > max_s:
        raise _invalid(f"reference_audio lasts {audio.duration_s:.1f} s; at most {max_s:.0f} s is accepted")
    return audio


@contextlib.contextmanager
def reference_wav_file(data: bytes | None) -> Iterator[Path | None]:
    """Yield a private temp WAV of the validated reference (or None without one); deleted afterwards."""
    if data is None:
        yield None
        return
    audio = validate_reference(data)
    fd, name = tempfile.mkstemp(prefix="tts-reference-", suffix=".wav")  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(audio.to_wav())
        yield path
    finally:
        path.unlink(missing_ok=True)
