"""The ``tts.consents.*`` requests and the consent fields of ``tts.voices.create``: parsed strictly, all bounded.

A consent record is the speaker's recorded agreement to have the voice cloned: a recording (OpenAI's
formats, at most 10 MiB), the BCP-47 language of the phrase and a label. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from tts_actor.errors import ErrorCode, TtsError, invalid
from tts_actor.wire.request_parsing import parse_json_object

MAX_RECORDING_BYTES = 10 * 1024 * 1024  # OpenAI's limit for a consent recording and a voice's audio sample
MAX_NAME_CHARS = 256
MAX_LANGUAGE_CHARS = 35
LIST_DEFAULT = 20
LIST_MAX = 100
CONSENT_PREFIX = "cons_"
VOICE_PREFIX = "voice_"
CONSENT_ID_RE = re.compile(r"^cons_[A-Za-z0-9_-]{32}$")
# BCP-47 as callers write it: a 2-3 letter primary language, then subtags of 1-8 letters or digits
BCP47_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
CREATE_FIX = 'Send {"name": "...", "language": "en-US", "recording": base64 audio (at most 10 MiB)}.'
ID_FIX = 'Send {"id": "cons_..."}: the id tts.consents.create (or POST /v1/audio/voice_consents) answered.'
# the first bytes of the formats OpenAI takes for a recording: mp3, wav, ogg, aac, flac, webm, mp4
_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC", b"\x1a\x45\xdf\xa3")


@dataclass(frozen=True)
class NewConsent:
    name: str
    language: str
    recording: bytes


@dataclass(frozen=True)
class ConsentPage:
    """A ``tts.consents.list`` request: the page after ``after`` (a consent id), ``limit`` records long."""

    after: str | None = None
    limit: int = LIST_DEFAULT


def check_name(value: object, field: str = "name") -> str:
    """A label: 1-256 characters of text, no control character; surrounding spaces dropped."""
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"'{field}' must be a non-empty string", CREATE_FIX)
    if len(value) > MAX_NAME_CHARS:
        raise invalid(f"'{field}' is {len(value)} characters; the limit is {MAX_NAME_CHARS}", CREATE_FIX)
    if _CONTROL.search(value):
        raise invalid(f"'{field}' holds a control character or a lone surrogate", CREATE_FIX)
    return value.strip()


def check_language(value: object) -> str:
    """A BCP-47 tag such as ``en-US``, kept as sent."""
    if not isinstance(value, str) or len(value) > MAX_LANGUAGE_CHARS or not BCP47_RE.match(value):
        raise invalid("'language' must be a BCP-47 language tag such as 'en-US'", CREATE_FIX)
    return value


def check_recording(data: bytes, field: str = "recording") -> bytes:
    """Audio in one of OpenAI's formats, at most MAX_RECORDING_BYTES; only its first bytes are read here."""
    if len(data) > MAX_RECORDING_BYTES:
        raise TtsError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"'{field}' is {len(data)} bytes; the limit is {MAX_RECORDING_BYTES}",
            "Send a shorter recording (a spoken consent phrase takes seconds).",
        )
    if not looks_like_audio(data):
        raise invalid(
            f"'{field}' is not audio in a known format",
            "Send mp3, wav, ogg, aac, flac, webm or mp4 audio.",
        )
    return data


def looks_like_audio(data: bytes) -> bool:
    """True for the container or frame headers of mp3, wav, ogg, aac (ADTS), flac, webm and mp4."""
    if len(data) < 12:
        return False
    if data.startswith(_MAGIC) or data[4:8] == b"ftyp":
        return True
    return data[0] == 0xFF and (data[1] & 0xE0) == 0xE0  # an MPEG audio or ADTS frame sync


def decode_recording(value: object, field: str = "recording") -> bytes:
    if not isinstance(value, str):
        raise invalid(f"'{field}' must be base64-encoded audio", CREATE_FIX)
    if len(value) > (MAX_RECORDING_BYTES * 4) // 3 + 4:
        raise TtsError(ErrorCode.PAYLOAD_TOO_LARGE, f"'{field}' is over {MAX_RECORDING_BYTES} bytes", CREATE_FIX)
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(f"'{field}' is not valid base64: {exc}", CREATE_FIX) from None
    return check_recording(data, field)


def _body(data: bytes, max_bytes: int, allowed: set[str]) -> dict[str, Any]:
    body = parse_json_object(data, max_bytes, "Send a smaller recording, or raise TTS_MAX_REQUEST_BYTES.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(f"unknown fields {unknown[:5]!r}; known: {sorted(allowed)!r}", CREATE_FIX)
    return body


def parse_consent_create(data: bytes, max_bytes: int) -> NewConsent:
    """``{"name", "language", "recording": base64}`` -> :class:`NewConsent`."""
    body = _body(data, max_bytes, {"name", "language", "recording"})
    for key in ("name", "language", "recording"):
        if body.get(key) is None:
            raise invalid(f"'{key}' is required", CREATE_FIX)
    return NewConsent(check_name(body["name"]), check_language(body["language"]), decode_recording(body["recording"]))


def parse_consent_id(data: bytes) -> str:
    """``{"id": "cons_..."}`` -> the id (a malformed one is later 'no such consent', like a missing one)."""
    body = _body(data, 4096, {"id"})
    return _consent_id(body)


def parse_consent_update(data: bytes) -> tuple[str, str]:
    """``{"id", "name"}``: the new label of a consent record."""
    body = _body(data, 4096, {"id", "name"})
    return _consent_id(body), check_name(body.get("name"))


def _consent_id(body: dict[str, Any]) -> str:
    """A string id, whatever its shape: one that is not a consent id reads as no such consent (the store says so)."""
    consent_id = body.get("id")
    if not isinstance(consent_id, str) or not consent_id:
        raise invalid("'id' (the consent id tts.consents.create answered) is required", ID_FIX)
    return consent_id


def parse_consent_page(data: bytes) -> ConsentPage:
    """``{"after"?: "cons_...", "limit"?: 1-100}``; an empty body is the first page of 20."""
    if not data.strip():
        return ConsentPage()
    body = _body(data, 4096, {"after", "limit"})
    after = body.get("after")
    if after is not None and (not isinstance(after, str) or not 1 <= len(after) <= 64):
        raise invalid("'after' must be a consent id from the previous page")
    limit = body.get("limit", LIST_DEFAULT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_MAX:
        raise invalid(f"'limit' must be an integer from 1 to {LIST_MAX}")
    return ConsentPage(after, limit)
