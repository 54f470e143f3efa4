"""The audit event's shape and its guard: ids and short scalars only, never text or audio."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tts_actor.config import Settings
from tts_actor.fleet.audit import SYNTHESIZE, VOICE_CREATE, AuditTrail, audit_event
from tts_actor.wire.subjects import Subjects


def test_an_event_names_who_what_when_and_where() -> None:
    event = audit_event(VOICE_CREATE, "translator-a", "p" * 32, "instance-1", consent="cons_1", bytes=None)
    assert event["action"] == "voice_create" and event["actor"] == "translator-a"
    assert event["id"] == "p" * 32 and event["instance"] == "instance-1" and event["consent"] == "cons_1"
    assert datetime.fromisoformat(event["at"]).utcoffset() is not None
    assert audit_event(SYNTHESIZE, None, "x", "i")["actor"] == "unknown"


@pytest.mark.parametrize("name", ["text", "input", "audio", "reference_audio", "reference_text", "Recording", "data"])
def test_a_field_that_would_carry_text_or_audio_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="never text or audio"):
        audit_event(SYNTHESIZE, "nats:a", "p", "i", **{name: "Meet me at midnight."})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"clip": b"RIFF...."}, "short scalar"),
        ({"segments": ["a", "b"]}, "short scalar"),
        ({"note": "x" * 201}, "the limit is 200"),
        ({"id": "another id"}, "not allowed"),
        ({"at": "2020-01-01"}, "not allowed"),
    ],
)
def test_bytes_lists_long_strings_and_reserved_names_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audit_event(SYNTHESIZE, "nats:a", "p", "i", **fields)


@pytest.mark.parametrize("action", ["", "Voice", "voice.create", "voice>", "a" * 41, "voice create"])
def test_an_action_is_one_lower_case_subject_token(action: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        audit_event(action, "nats:a", "p", "i")


def test_the_streams_are_named_after_the_subject_prefix() -> None:
    assert (Subjects().audit_stream, Subjects().erasure_stream) == ("TTS_AUDIT", "TTS_ERASURES")
    acme = Subjects(prefix="acme.tts")
    assert acme.audit_stream == "ACME_TTS_AUDIT" and acme.audit("voice_delete") == "acme.tts.audit.voice_delete"
    assert acme.audit() == "acme.tts.audit.>" and acme.erasure == "acme.tts.erasure.voice"
    assert Subjects(audio_cache_bucket="cache").audio_refs_bucket == "cache_refs"


class Kept(AuditTrail):
    """The trail without its stream: what would be published is kept here (the publishing is test_audit.py's)."""

    def __init__(self) -> None:
        super().__init__(None, Settings())  # type: ignore[arg-type]
        self.kept: list[str] = []

    async def record(self, action: str, actor: str | None, subject_id: str, **fields: Any) -> bool:
        self.kept.append(subject_id)
        return True


async def test_a_use_is_recorded_only_when_its_check_says_so_and_when_the_check_cannot_answer() -> None:
    async def exists() -> bool:
        return True

    async def gone() -> bool:
        return False

    async def unreachable() -> bool:
        raise ConnectionError("JetStream is away")

    trail = Kept()
    for name, check in (("there", exists), ("deleted", gone), ("unknown", unreachable), ("unchecked", None)):
        trail.record_soon(SYNTHESIZE, "translator-a", name, only_if=check, backend="chatterbox")
    await trail.drain()
    assert trail.kept == ["there", "unknown", "unchecked"]
