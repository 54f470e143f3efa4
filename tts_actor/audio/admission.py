"""Refuse at once what would be minutes of noise: too much speech, or a script the voice cannot read.

A request is judged before any job is queued, from its spoken form (not its character
count): 198 characters of ``9999999999`` are 78 s of speech, and 1,000 Chinese
characters read as English 773 s of "chinese letter". The caller learns in
milliseconds, with the estimate, instead of holding a worker until the synthesis
timeout. Pure: the cost comes from the adapter (``BackendAdapter.spoken_cost``).
"""

from __future__ import annotations

from collections.abc import Callable

from tts_actor.audio.scripts import script_mismatch
from tts_actor.errors import ErrorCode, TtsError


def check_script(text: str, language: str, allow_mismatch: bool, backend: str | None = None) -> None:
    """Raise ``unsupported_script`` when most of ``text`` is in a script ``language`` does not read."""
    if allow_mismatch:
        return
    mismatch = script_mismatch(text, language)
    if mismatch is None:
        return
    raise TtsError(
        ErrorCode.UNSUPPORTED_SCRIPT,
        f"{mismatch.share:.0%} of the text's letters are {mismatch.script}, which language {language!r} "
        f"does not read (its engine would spell each one out)",
        f"Send language={mismatch.suggested!r} (or a voice that speaks it), or send "
        '"allow_script_mismatch": true to have it read anyway.',
        backend=backend,
        detail={"script": mismatch.script, "share": mismatch.share, "suggested_language": mismatch.suggested},
    )


def check_length(
    cost: Callable[[], int], units_per_s: float, max_audio_s: float, unit: str, backend: str | None = None
) -> float:
    """The estimated seconds of speech; raise ``text_too_long`` when they pass ``max_audio_s``."""
    units = cost()
    estimate = units / units_per_s
    if estimate <= max_audio_s:
        return estimate
    raise TtsError(
        ErrorCode.TEXT_TOO_LONG,
        f"the text would be about {estimate:.0f} s of speech ({units} {unit} as spoken, numbers and symbols "
        f"written out); the limit is {max_audio_s:g} s",
        "Send less text per request (split it and send the parts in turn), spell out long digit runs only where "
        "they are meant to be read, or raise TTS_MAX_AUDIO_S.",
        backend=backend,
        detail={"estimated_audio_s": round(estimate, 1), "limit_s": max_audio_s, "spoken_units": units, "unit": unit},
    )
