"""The pure parts of consents and custom voices: who the caller is, the limits, OpenAI's shapes, the roles."""

from __future__ import annotations

import pytest

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.custom_voice_compat import page_query, voice_deleted, voice_object
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.http_edge.middleware import key_id
from tts_actor.http_edge.openai_compat import map_speech_request
from tts_actor.wire.caller import caller_identity, inbox_user
from tts_actor.wire.consent_requests import check_language, looks_like_audio
from tts_actor.wire.roles import roles
from tts_actor.wire.subjects import Subjects


@pytest.mark.parametrize(
    ("reply", "user"),
    [
        ("_INBOX_translator-a.abc.def", "translator-a"),
        ("_INBOX.abc", "anonymous"),
        (None, "anonymous"),
        ("_INBOX_.x", "anonymous"),
        ("custom-prefix.x", "custom-prefix"),
    ],
)
def test_the_reply_inbox_names_the_user(reply: str | None, user: str) -> None:
    assert inbox_user(reply) == user


def test_the_caller_header_narrows_below_the_user_and_never_replaces_it() -> None:
    assert caller_identity("_INBOX_edge.x", {"Tts-Caller": "http:key_ab"}) == "edge/http:key_ab"
    assert caller_identity("_INBOX_edge.x", {"Tts-Caller": "translator-a"}) == "edge/translator-a"
    with pytest.raises(TtsError):
        caller_identity("_INBOX_edge.x", {"Tts-Caller": "a/b"})


def test_an_api_key_is_named_without_being_shown() -> None:
    assert key_id("secret") == key_id("secret") != key_id("secret2")
    assert key_id("secret").startswith("key_") and "secret" not in key_id("secret")


@pytest.mark.parametrize(
    ("data", "audio"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", True),
        (b"ID3\x04" + bytes(20), True),
        (b"\xff\xfb\x90\x00" + bytes(20), True),
        (b"OggS" + bytes(20), True),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(8), True),
        (b"<html>not audio</html>", False),
        (b"RIFF", False),
    ],
)
def test_recordings_are_recognised_by_their_first_bytes(data: bytes, audio: bool) -> None:
    assert looks_like_audio(data) is audio


@pytest.mark.parametrize("tag", ["en", "en-US", "zh-Hant-TW", "gsw"])
def test_bcp47_tags_pass(tag: str) -> None:
    assert check_language(tag) == tag


@pytest.mark.parametrize("tag", ["", "english", "en_US", "e", "en-" + "x" * 40])
def test_other_tags_do_not(tag: str) -> None:
    with pytest.raises(TtsError):
        check_language(tag)


def test_openais_shapes() -> None:
    voice = voice_object({"id": "voice_x", "name": "n", "created_at": "2026-12-01T10:00:00+00:00"})
    assert voice == {
        "id": "voice_x",
        "object": "audio.voice",
        "name": "n",
        "created_at": 1796119200,
        "type": "audio_sample",
    }
    assert voice_deleted("voice_x", {"deleted": True}) == {
        "id": "voice_x",
        "object": "audio.voice.deleted",
        "deleted": True,
    }
    with pytest.raises(TtsError) as gone:
        voice_deleted("voice_x", {"deleted": False})
    assert gone.value.code is ErrorCode.UNKNOWN_VOICE
    assert page_query({"limit": "5", "after": "cons_a"}) == ("cons_a", 5)
    for bad in ({"limit": "101"}, {"limit": "-1"}, {"foo": "1"}):
        with pytest.raises(TtsError):
            page_query(bad)


def test_a_custom_voice_id_becomes_the_voice_profile() -> None:
    body = {"model": "tts-1", "input": "Hi.", "voice": {"id": "voice_" + "a" * 32}}
    call = map_speech_request(body, EdgeSettings(), {})
    assert call.body["voice_profile"] == "voice_" + "a" * 32 and "voice" not in call.body
    builtin = map_speech_request({**body, "voice": "alloy"}, EdgeSettings(), {})
    assert "voice_profile" not in builtin.body
    with pytest.raises(TtsError):
        map_speech_request({**body, "voice": {"id": "voice_x", "extra": 1}}, EdgeSettings(), {})


def test_only_the_operator_reaches_every_callers_consents() -> None:
    s = Subjects()
    admin = {s.consents_admin("list"), s.consents_admin("delete")}
    by_user = {role.user: set(role.publish) for role in roles()}
    assert admin <= by_user["operator"]
    for user in ("translator-a", "translator-b", "monitor"):
        assert not admin & by_user[user]
    for tenant in ("translator-a", "translator-b"):
        assert {s.synthesize, s.voices_create, s.consents("create"), s.consents("delete")} <= by_user[tenant]
    assert not {s.consents("create"), s.voices_create} & by_user["operator"]
