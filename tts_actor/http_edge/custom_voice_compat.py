"""The service's voice and consent replies as OpenAI's objects, and the list query. Pure: no I/O.

``audio.voice`` (``created_at`` in Unix seconds, ``type: audio_sample``), ``audio.voice.deleted`` and
the deleted ``audio.voice_consent``, as the openai SDK (3.57) parses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.consent_requests import LIST_MAX

LIST_FIX = "GET /v1/audio/voice_consents?limit=1..100&after=<the last id of the previous page>"


def voice_object(reply: Mapping[str, Any]) -> dict[str, Any]:
    """``tts.voices.create``'s reply -> OpenAI's ``audio.voice``."""
    return {
        "id": reply["id"],
        "object": "audio.voice",
        "name": reply.get("name") or "",
        "created_at": _epoch(reply.get("created_at")),
        "type": "audio_sample",
    }


def voice_deleted(voice_id: str, reply: Mapping[str, Any]) -> dict[str, Any]:
    """``tts.voices.delete``'s reply -> ``audio.voice.deleted``; a voice that was not there is a 404, as OpenAI's."""
    if not reply.get("deleted"):
        raise TtsError(
            ErrorCode.UNKNOWN_VOICE,
            "no such voice",
            "Use an id POST /v1/audio/voices answered; a deleted voice is gone.",
            detail={"param": "voice_id"},
        )
    return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


def consent_deleted(reply: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's deleted consent, and which voices went with it (an extension the SDK ignores)."""
    return {
        "id": reply["id"],
        "object": "audio.voice_consent",
        "deleted": True,
        "voices_deleted": list(reply.get("voices_deleted", [])),
    }


def page_query(query: Mapping[str, str]) -> tuple[str | None, int | None]:
    """``?after=&limit=`` -> (after, limit); the service checks the rest."""
    unknown = sorted(set(query) - {"after", "limit"})
    if unknown:
        raise _list_error(f"unknown query parameters {unknown[:5]!r}")
    after = query.get("after") or None
    if after is not None and len(after) > 64:
        raise _list_error("'after' must be a consent id from the previous page")
    raw = query.get("limit")
    if raw is None:
        return after, None
    if not raw.isdigit() or not 1 <= int(raw) <= LIST_MAX:
        raise _list_error(f"'limit' must be an integer from 1 to {LIST_MAX}")
    return after, int(raw)


def _list_error(message: str) -> TtsError:
    return TtsError(ErrorCode.INVALID_REQUEST, message, LIST_FIX)


def _epoch(value: object) -> int:
    """The profile's ISO-8601 time (or already Unix seconds) as Unix seconds; 0 when unknown."""
    if isinstance(value, int):
        return value
    try:
        return int(datetime.fromisoformat(str(value)).timestamp())
    except ValueError:
        return 0
