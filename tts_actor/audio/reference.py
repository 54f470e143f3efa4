"""Reference audio for voice cloning, checked as audio: a readable WAV of a bounded length.

Checked when a request or a voice profile is parsed, so bad audio is the caller's ``invalid_request`` at once,
whichever backend would have cloned it (or none).
"""

from __future__ import annotations

import wave

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
