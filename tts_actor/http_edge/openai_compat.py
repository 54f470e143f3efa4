"""OpenAI's speech API mapped onto the service's request and errors. Pure: no I/O.

The HTTP edge (``http_edge.py``) reads the HTTP request, and this module turns an
OpenAI ``POST /v1/audio/speech`` body into the ``tts.synthesize`` request, and a
:class:`TtsError` into an HTTP status, headers and OpenAI's error body shape, so
an SDK user sees the service's code, message and fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tts_actor.errors import SERVICE_STATUS, ErrorCode, TtsError, invalid
from tts_actor.http_edge.edge_settings import DEFAULT_VOICE, ROUTED, EdgeSettings
from tts_actor.wire.consent_requests import VOICE_PREFIX
from tts_actor.wire.messages import AudioFormat, Priority, SynthesisOptions, SynthesisRequest

# OpenAI's response formats, in the order its API lists them
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# the service's own, beside them: what iOS/Safari and browsers' MediaSource play natively
EXTRA_FORMATS = ("m4a", "webm")
RESPONSE_FORMATS = OPENAI_FORMATS + EXTRA_FORMATS
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/L16",
    "m4a": "audio/mp4",
    "webm": "audio/webm; codecs=opus",
}
OPENAI_PCM_RATE = 24000  # OpenAI's pcm is 24 kHz; asked for when the service can resample
STREAM_FORMATS = ("audio", "sse")
# the body fields accepted: OpenAI's, plus the service's own extensions
SPEECH_FIELDS = {
    "model",
    "input",
    "voice",
    "response_format",
    "speed",
    "stream_format",
    "instructions",
    "language",
    "wait_ms",
    "allow_script_mismatch",
    "priority",
}
PRIORITY_HEADER = "X-Tts-Priority"  # the same as the body's ``priority``, for callers that cannot add body fields
MAX_INSTRUCTIONS_CHARS = 4096
MAX_VOICE_ID_CHARS = 64
PRIORITIES = tuple(p.value for p in Priority)


@dataclass(frozen=True)
class SpeechCall:
    """An OpenAI speech request, mapped: what to send over NATS and how to answer over HTTP."""

    body: dict[str, Any]  # the tts.synthesize request as JSON fields
    response_format: str
    stream_format: str

    def request(self) -> SynthesisRequest | WireRequest:
        """A :class:`SynthesisRequest` where this build's messages can hold it, else the raw fields.

        The raw form keeps a format this build does not know yet going to the service,
        which then answers for itself.
        """
        known = {f.name for f in dataclasses.fields(SynthesisRequest)}
        if set(self.body) - {"options"} <= known and self.body["format"] in {f.value for f in AudioFormat}:
            fields = {k: v for k, v in self.body.items() if k != "options"}
            fields["format"] = AudioFormat(fields["format"])
            if "priority" in fields:
                fields["priority"] = Priority(fields["priority"])
            return SynthesisRequest(**fields, options=SynthesisOptions(**self.body.get("options", {})))
        return WireRequest(self.body)


@dataclass(frozen=True)
class WireRequest:
    """A request as its JSON fields, for the fields this build's :class:`SynthesisRequest` lacks."""

    body: dict[str, Any]

    @property
    def wait_ms(self) -> int:
        return int(self.body.get("wait_ms", 0))

    @property
    def text(self) -> str:
        return str(self.body["text"])

    def to_json(self) -> bytes:
        return json.dumps(self.body).encode()


def _string(body: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _param_error(key, f"'{key}' is required")
        return None
    if not isinstance(value, str):
        raise _param_error(key, f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _param_error(param: str, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> TtsError:
    error = invalid(message, "Send the body of OpenAI's POST /v1/audio/speech; see docs/http-api.md.")
    error.code = code
    error.detail = {"param": param}
    return error


def map_speech_request(
    body: Any,
    settings: EdgeSettings,
    voice_languages: Mapping[str, str],
    request_fields: set[str] | None = None,
    priority_header: str | None = None,
) -> SpeechCall:
    """OpenAI speech body -> :class:`SpeechCall`; raises :class:`TtsError` (invalid_request) for a bad body.

    ``voice_languages`` maps the fleet's voice ids to their language: OpenAI's API has
    no language field, so a voice implies it. ``request_fields`` are the JSON fields the
    service knows beyond the basic ones (the SynthesisRequest's), to fill only those.
    """
    if not isinstance(body, dict):
        raise _param_error("", f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - SPEECH_FIELDS)
    if unknown:
        raise _param_error(unknown[0], f"unrecognized request argument(s): {', '.join(unknown[:5])}")
    text = _string(body, "input", required=True)
    assert text is not None
    model = _string(body, "model", required=True)
    assert model is not None
    fmt = _string(body, "response_format") or "mp3"
    if fmt not in RESPONSE_FORMATS:
        offered = ", ".join(RESPONSE_FORMATS)
        raise _param_error("response_format", f"response_format {fmt[:20]!r} is not one of {offered}")
    stream_format = _string(body, "stream_format") or "audio"
    if stream_format not in STREAM_FORMATS:
        raise _param_error("stream_format", f"stream_format {stream_format[:20]!r} is not one of audio, sse")
    instructions = _string(body, "instructions")
    if instructions is not None and len(instructions) > MAX_INSTRUCTIONS_CHARS:
        raise _param_error("instructions", f"instructions are limited to {MAX_INSTRUCTIONS_CHARS} characters")
    wire: dict[str, Any] = {"text": text, "format": fmt}
    backend = settings.model_aliases.get(model, model)
    if backend != ROUTED:
        wire["backend"] = backend
    raw_voice = body.get("voice")
    profile = _custom_voice(raw_voice)
    voice = None if profile is not None else _voice(raw_voice, settings)
    if profile is not None:
        wire["voice_profile"] = profile
    elif voice is not None:
        wire["voice"] = voice
    language = _string(body, "language")
    wire["language"] = (language or voice_languages.get(voice or "") or settings.default_language).lower()
    speed = body.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise _param_error("speed", f"speed must be a number from 0.25 to 4.0, got {str(speed)[:20]}")
        if speed != 1.0:
            wire["options"] = {"speed": float(speed)}
    wait_ms = body.get("wait_ms", settings.wait_ms)
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or wait_ms < 0:
        raise _param_error("wait_ms", "wait_ms must be a non-negative integer")
    if wait_ms:
        wire["wait_ms"] = wait_ms
    extra = request_fields or set()
    allow = body.get("allow_script_mismatch", False)
    if not isinstance(allow, bool):
        raise _param_error("allow_script_mismatch", "allow_script_mismatch must be true or false")
    if allow and "allow_script_mismatch" in extra:
        wire["allow_script_mismatch"] = True
    priority = body.get("priority", priority_header)
    if priority is not None:
        if priority not in PRIORITIES:
            where = "priority" if "priority" in body else PRIORITY_HEADER
            shown = str(priority)[:20]
            raise _param_error("priority", f"{where} must be one of {', '.join(PRIORITIES)}, got {shown!r}")
        if "priority" in extra and priority != "normal":
            wire["priority"] = priority
    if fmt == "pcm" and "sample_rate" in extra:
        wire["sample_rate"] = OPENAI_PCM_RATE
    return SpeechCall(wire, fmt, stream_format)


def _custom_voice(raw: Any) -> str | None:
    """``{"id": "voice_..."}`` (a voice made by ``POST /v1/audio/voices``): the voice profile it names."""
    if isinstance(raw, dict):
        if set(raw) - {"id"}:
            raise _param_error("voice", "a custom voice is {'id': 'voice_...'}, with nothing else")
        voice_id = raw.get("id")
        if isinstance(voice_id, str) and voice_id.startswith(VOICE_PREFIX):
            if len(voice_id) > MAX_VOICE_ID_CHARS:
                raise _param_error("voice", f"a voice id has at most {MAX_VOICE_ID_CHARS} characters")
            return voice_id
    return None


def _voice(raw: Any, settings: EdgeSettings) -> str | None:
    """A service voice id, an alias (OpenAI's names), or ``{"id": ...}``; None: the default voice."""
    if isinstance(raw, dict):
        raw = raw.get("id")
    if raw is None:
        raise _param_error("voice", "'voice' is required (a voice id from GET /v1/audio/voices, or an alias)")
    if not isinstance(raw, str) or not raw:
        raise _param_error("voice", "'voice' must be a non-empty string")
    target = settings.voice_aliases.get(raw, raw)
    return None if target == DEFAULT_VOICE else target


# --- errors -------------------------------------------------------------------
PARAMS: dict[ErrorCode, str] = {
    ErrorCode.TEXT_TOO_LONG: "input",
    ErrorCode.UNKNOWN_BACKEND: "model",
    ErrorCode.UNKNOWN_VOICE: "voice",
    ErrorCode.UNKNOWN_FORMAT: "response_format",
    ErrorCode.UNSUPPORTED_LANGUAGE: "language",
    ErrorCode.UNSUPPORTED_SCRIPT: "input",
}


# the service's request fields -> the caller's (OpenAI's), in messages, fixes and ``param``
CALLER_FIELDS = {"text": "input", "backend": "model", "format": "response_format", "options.speed": "speed"}
_CALLER_WORDING = (
    (re.compile(r"'text'"), "'input'"),
    (re.compile(r"^text is "), "input is "),
    (re.compile(r"\bthe text is "), "the input is "),
    (re.compile(r"^format "), "response_format "),
    (re.compile(r"'format'"), "'response_format'"),
    (re.compile(r"\bunknown backend "), "unknown model "),
    (re.compile(r"'backend'"), "'model'"),
    (re.compile(r"option 'speed'"), "'speed'"),
)
# retrying these cannot help (the request or the deployment must change): OpenAI's SDKs read x-should-retry
_RETRY_STATUSES = (408, 409, 429)
_PERMANENT_CODES = (ErrorCode.BACKEND_FAILED,)


def caller_wording(text: str) -> str:
    """A service message or fix reworded with the field names the HTTP caller sent."""
    for pattern, replacement in _CALLER_WORDING:
        text = pattern.sub(replacement, text)
    return text


def should_retry(status: int, code: ErrorCode) -> bool | None:
    """False for a permanent error, True for a transient one; None where the SDK's own default is right."""
    if 400 <= status < 500:
        return status in _RETRY_STATUSES
    if code in _PERMANENT_CODES:
        return False
    if code in (ErrorCode.BACKEND_NOT_READY, ErrorCode.DEADLINE_UNREACHABLE):
        return True
    return None


def http_status(error: TtsError) -> int:
    return SERVICE_STATUS.get(error.code, 500)


def error_type(status: int) -> str:
    """OpenAI's ``error.type`` for a status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_response(error: TtsError) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, body) in OpenAI's shape, keeping the service's code, fix and state."""
    status = http_status(error)
    headers: dict[str, str] = {}
    retry_ms = error.retry_after_ms
    if retry_ms is None and error.code in (ErrorCode.BACKEND_NOT_READY, ErrorCode.BUSY):
        retry_ms = 1000
    if retry_ms is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
        headers["Retry-After-Ms"] = str(retry_ms)  # the openai SDKs read this one first
    retry = should_retry(status, error.code)
    if retry is not None:
        headers["x-should-retry"] = "true" if retry else "false"
    param = (error.detail or {}).get("param") or PARAMS.get(error.code)
    body: dict[str, Any] = {
        "message": caller_wording(error.message),
        "type": error_type(status),
        "param": CALLER_FIELDS.get(param, param) if param else None,
        "code": error.code.value,
        "fix": caller_wording(error.fix),
    }
    for key in ("backend", "state", "reason"):
        if getattr(error, key):
            body[key] = getattr(error, key)
    return status, headers, {"error": body}


def auth_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "authentication_error",
            "param": None,
            "code": code,
            "fix": "Send 'Authorization: Bearer <key>' with a key listed in the server's TTS_HTTP_API_KEYS.",
        }
    }


# --- listings -----------------------------------------------------------------
def models_list(status: Mapping[str, Any], settings: EdgeSettings) -> dict[str, Any]:
    """GET /v1/models: every backend (with its state) and every alias, in OpenAI's list shape."""
    backends = {b["name"]: b for b in status.get("backends", [])}
    data: list[dict[str, Any]] = []
    for name, b in backends.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "tts-actor",
                "state": b.get("state"),
                "reason": b.get("reason"),
                "fix": b.get("fix"),
                "languages": b.get("languages", []),
            }
        )
    for alias, target in settings.model_aliases.items():
        if alias in backends:
            continue
        entry: dict[str, Any] = {"id": alias, "object": "model", "created": 0, "owned_by": "tts-actor"}
        entry["backend"] = None if target == ROUTED else target
        entry["state"] = (backends.get(target) or {}).get("state") if target != ROUTED else None
        data.append(entry)
    return {"object": "list", "data": data}


def voice_languages(voices: Mapping[str, Any]) -> dict[str, str]:
    """tts.voices reply -> {voice id: language} (the first backend's, where two share an id)."""
    result: dict[str, str] = {}
    for backend in voices.get("backends", {}).values():
        for language, entries in backend.get("languages", {}).items():
            for voice in entries:
                result.setdefault(voice["id"], language)
    return result


def voices_list(voices: Mapping[str, Any], settings: EdgeSettings) -> dict[str, Any]:
    """GET /v1/audio/voices: the fleet's voices, and the aliases and what they stand for."""
    listed = [
        {**voice, "backend_state": backend.get("state")}
        for backend in voices.get("backends", {}).values()
        for entries in backend.get("languages", {}).values()
        for voice in entries
    ]
    aliases = {name: (None if target == DEFAULT_VOICE else target) for name, target in settings.voice_aliases.items()}
    return {"voices": listed, "aliases": aliases}
