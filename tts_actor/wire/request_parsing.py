"""Parsing of a synthesis request: strict and total, so a bad message can never reach a backend.

Any input either becomes a valid :class:`SynthesisRequest` or a :class:`TtsError` with a code.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tts_actor.audio import formats
from tts_actor.audio.reference import validate_reference
from tts_actor.audio.waveform import DEFAULT_POINTS, POINTS_RANGE
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError, invalid
from tts_actor.wire.messages import (
    LANGUAGE_RE,
    MAX_REFERENCE_AUDIO_BYTES,
    MAX_REFERENCE_TEXT_CHARS,
    NAME_RE,
    UNSPEAKABLE,
    AudioFormat,
    Priority,
    SynthesisOptions,
    SynthesisRequest,
    Timings,
)

_FIELDS = {
    "text",
    "language",
    "voice",
    "backend",
    "format",
    "wait_ms",
    "options",
    "reference_audio",
    "reference_text",
    "reference_language",
    "sample_rate",
    "bitrate",
    "stream",
    "deadline_ms",
    "voice_profile",
    "cache",
    "allow_script_mismatch",
    "timings",
    "waveform_points",
    "priority",
}
MAX_DEADLINE_MS = 24 * 3600 * 1000
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "speed": (int, float),
    "exaggeration": (int, float),
    "cfg_weight": (int, float),
    "temperature": (int, float),
    "seed": (int,),
}
_OPTION_RANGES: dict[str, tuple[float, float]] = {
    "speed": (0.25, 4.0),
    "exaggeration": (0.0, 2.0),
    "cfg_weight": (0.0, 1.0),
    "temperature": (0.05, 5.0),
    "seed": (0, 2**32 - 1),
}


def _echo(value: Any, limit: int = 40) -> str:
    """A caller's value, shortened, for an error message: replies must stay small whatever was sent."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _echo_names(names: list[str], most: int = 5) -> str:
    shown = ", ".join(_echo(n) for n in names[:most])
    return f"[{shown}{', ...' if len(names) > most else ''}]"


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{key}' must be a string, got {type(value).__name__}")
    if not NAME_RE.match(value):
        raise invalid(f"'{key}' must be 1-128 characters of letters, digits, '_', '.', ':' or '-'")
    return value


def _options(raw: Any) -> SynthesisOptions:
    if raw is None:
        return SynthesisOptions()
    if not isinstance(raw, dict):
        raise invalid("'options' must be an object")
    unknown = sorted(set(raw) - set(_OPTION_TYPES))
    if unknown:
        raise invalid(f"unknown options {_echo_names(unknown)}; known: {sorted(_OPTION_TYPES)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, _OPTION_TYPES[key]):
            raise invalid(f"option '{key}' must be a number")
        low, high = _OPTION_RANGES[key]
        if not low <= value <= high:
            raise invalid(f"option '{key}'={value} is outside [{low}, {high}]")
        values[key] = value
    return SynthesisOptions(**values)


def parse_json_object(data: bytes, max_bytes: int, size_fix: str) -> dict[str, Any]:
    """A request body: at most ``max_bytes``, valid JSON, an object; anything else a structured error."""
    if len(data) > max_bytes:
        raise TtsError(ErrorCode.PAYLOAD_TOO_LARGE, f"request is {len(data)} bytes; the limit is {max_bytes}", size_fix)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a huge integer literal, deep nesting
        if "integer string conversion" in str(exc):  # Python's words name a Python API: not the caller's fix
            raise invalid("request body holds an integer with more than 4300 digits") from None
        raise invalid(f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise invalid(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def decode_reference_audio(value: object) -> bytes:
    """``reference_audio``: base64 of at most MAX_REFERENCE_AUDIO_BYTES (the WAV: ``validate_reference``)."""
    if not isinstance(value, str):
        raise invalid("'reference_audio' must be base64-encoded WAV bytes")
    try:
        audio = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"'reference_audio' is not valid base64: {exc}") from None
    if len(audio) > MAX_REFERENCE_AUDIO_BYTES:
        raise TtsError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"reference audio is {len(audio)} bytes; the limit is {MAX_REFERENCE_AUDIO_BYTES}",
            "Send 5-20 s of mono 16-bit WAV.",
        )
    return audio


def parse_synthesis_request(data: bytes, settings: Settings) -> SynthesisRequest:
    """Validate raw request bytes against the configured limits."""
    body = parse_json_object(
        data,
        settings.max_request_bytes,
        "Send shorter text or a smaller reference audio, or raise TTS_MAX_REQUEST_BYTES.",
    )
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise invalid(f"unknown fields {_echo_names(unknown)}; known: {sorted(_FIELDS)}")
    text = body.get("text")
    if text is None:
        raise invalid("'text' is required")
    if not isinstance(text, str):
        raise invalid(f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise invalid("'text' is empty")
    bad = UNSPEAKABLE.search(text)
    if bad:
        raise invalid(
            f"'text' holds a control character or a lone surrogate (U+{ord(bad.group()):04X}) at index {bad.start()}",
            "Send plain UTF-8 text; newlines and tabs are fine.",
        )
    if len(text) > settings.max_text_chars:
        raise TtsError(
            ErrorCode.TEXT_TOO_LONG,
            f"text is {len(text)} characters; the limit is {settings.max_text_chars}",
            "Split the text into sentences and send them one by one, or raise TTS_MAX_TEXT_CHARS.",
            detail={"length": len(text), "limit": settings.max_text_chars},
        )
    language = body.get("language", "en")
    if not isinstance(language, str) or not LANGUAGE_RE.match(language.lower()):
        raise invalid(f"'language' must be an ISO 639-1 code such as 'en', got {_echo(language)}")
    fmt_raw = body.get("format", AudioFormat.WAV.value)
    try:
        fmt = AudioFormat(fmt_raw)
    except ValueError:
        raise TtsError(
            ErrorCode.UNKNOWN_FORMAT,
            f"format {_echo(fmt_raw)} is not offered",
            f"Use one of: {', '.join(f.value for f in AudioFormat)}.",
        ) from None
    sample_rate, bitrate, deadline_ms = (
        _optional_int(body, "sample_rate", 1, 10**6),
        _optional_int(body, "bitrate", 1, 10**7),
        _optional_int(body, "deadline_ms", 0, MAX_DEADLINE_MS),
    )
    problem = formats.check_format(fmt.value, sample_rate, bitrate)
    if problem:
        offered = ", ".join(f"{name} ({'/'.join(map(str, info.rates))} Hz)" for name, info in formats.FORMATS.items())
        lossy = ", ".join(name for name, info in formats.FORMATS.items() if info.bitrate_range)
        raise invalid(problem, f"Supported: {offered}; bitrate for {lossy} only.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid(f"'stream' must be true or false, got {_echo(stream)}")
    wait_ms = body.get("wait_ms", 0)
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
        raise invalid(f"'wait_ms' must be a non-negative integer, got {_echo(wait_ms)}")
    reference = body.get("reference_audio")
    reference_bytes = None if reference is None else decode_reference_audio(reference)
    if reference_bytes is not None:
        validate_reference(reference_bytes)  # the caller's bad audio, whichever backend (if any) would clone it
    voice_profile = _voice_profile(body.get("voice_profile"), reference_bytes is not None)
    cache = body.get("cache", True)
    if not isinstance(cache, bool):
        raise invalid(f"'cache' must be true or false, got {_echo(cache)}")
    allow_script_mismatch = body.get("allow_script_mismatch", False)
    if not isinstance(allow_script_mismatch, bool):
        raise invalid(f"'allow_script_mismatch' must be true or false, got {_echo(allow_script_mismatch)}")
    reference_text = _reference_text(body.get("reference_text"), reference_bytes is not None)
    reference_language = body.get("reference_language")
    if reference_language is not None and (
        not isinstance(reference_language, str) or not LANGUAGE_RE.match(reference_language.lower())
    ):
        raise invalid(f"'reference_language' must be an ISO 639-1 code such as 'en', got {_echo(reference_language)}")
    return SynthesisRequest(
        text=text,
        language=language.lower(),
        voice=_optional_str(body, "voice"),
        backend=_optional_str(body, "backend"),
        format=fmt,
        wait_ms=min(wait_ms, settings.max_wait_ms),
        options=_options(body.get("options")),
        reference_audio=reference_bytes,
        reference_text=reference_text,
        reference_language=reference_language.lower() if reference_language else None,
        sample_rate=sample_rate,
        bitrate=bitrate,
        stream=stream,
        deadline_ms=deadline_ms,
        voice_profile=voice_profile,
        cache=cache,
        allow_script_mismatch=allow_script_mismatch,
        timings=_timings(body.get("timings", Timings.SEGMENT.value)),
        waveform_points=_optional_int(body, "waveform_points", *POINTS_RANGE) or DEFAULT_POINTS,
        priority=parse_priority(body.get("priority")),
    )


def _timings(value: object) -> Timings:
    """``segment`` (the default) or ``word``."""
    try:
        return Timings(value)
    except ValueError:
        raise invalid(
            f"'timings' must be one of: {', '.join(t.value for t in Timings)}; got {_echo(value)}",
            "Send \"word\" for each word's time, or leave it out for each segment's.",
        ) from None


def parse_priority(value: object) -> Priority:
    """``priority``: interactive, normal (the default) or bulk."""
    if value is None:
        return Priority.NORMAL
    if not isinstance(value, str) or value not in Priority._value2member_map_:
        raise invalid(f"'priority' must be one of {', '.join(p.value for p in Priority)}, got {_echo(value)}")
    return Priority(value)


def _voice_profile(value: object, has_audio: bool) -> str | None:
    """A profile id: a short string, and never with a clip of its own (which voice would it be?)."""
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise invalid("'voice_profile' must be the id tts.voices.create answered (a string)")
    if has_audio:
        raise invalid(
            "'voice_profile' and 'reference_audio' were both sent",
            "Send one: the profile id (its clip is stored) or the clip itself.",
        )
    return value


def _reference_text(value: object, has_audio: bool) -> str | None:
    """The transcript of the reference clip: a short plain string, and only alongside the clip."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid("'reference_text' must be a non-empty string: what is said in reference_audio")
    if not has_audio:
        raise invalid("'reference_text' was sent without 'reference_audio'", "Send it with the clip it transcribes.")
    if len(value) > MAX_REFERENCE_TEXT_CHARS:
        raise invalid(
            f"'reference_text' is {len(value)} characters; the limit is {MAX_REFERENCE_TEXT_CHARS}",
            "Send the transcript of a clip of at most 30 s.",
        )
    bad = UNSPEAKABLE.search(value)
    if bad:
        raise invalid(f"'reference_text' holds a control character (U+{ord(bad.group()):04X})")
    return value.strip()


def _optional_int(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"'{key}' must be an integer from {low} to {high}, got {_echo(value)}")
    return value
