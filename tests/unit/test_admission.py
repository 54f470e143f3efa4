"""Refused at once: text in a script the voice's language does not read, and more speech than the limit."""

from __future__ import annotations

import pytest

from tts_actor.audio.admission import check_length, check_script
from tts_actor.audio.scripts import letter_scripts, script_mismatch, script_of
from tts_actor.config import ConfigError, load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.http_edge.openai_compat import EdgeSettings, http_status, map_speech_request
from tts_actor.wire.request_parsing import parse_synthesis_request


def test_scripts_are_told_by_code_point() -> None:
    assert [script_of(c) for c in "aé你あア한ж؟αש१"] == [
        "Latin",
        "Latin",
        "Han",
        "Hiragana",
        "Katakana",
        "Hangul",
        "Cyrillic",
        "Arabic",
        "Greek",
        "Hebrew",
        "Devanagari",
    ]
    assert letter_scripts("Hi 你好, 123!") == {"Latin": 2, "Han": 2}  # digits and punctuation are no letters


@pytest.mark.parametrize(
    ("text", "language", "script", "suggested"),
    [
        ("我们今天在会议室里讨论了翻译服务", "en", "Han", "zh"),
        ("Привет, как дела?", "en", "Cyrillic", "ru"),
        ("مرحبا بكم في الاجتماع", "de", "Arabic", "ar"),
        ("今日はとても良い天気ですね", "zh", "Hiragana", "ja"),
        ("東京都庁は新宿にあります", "en", "Han", "ja"),  # kanji with kana: Japanese
        ("안녕하세요 반갑습니다", "ja", "Hangul", "ko"),
        ("Καλημέρα σας", "fr", "Greek", "el"),
    ],
)
def test_text_mostly_in_a_foreign_script_names_a_language_that_reads_it(
    text: str, language: str, script: str, suggested: str
) -> None:
    mismatch = script_mismatch(text, language)
    assert mismatch is not None and (mismatch.script, mismatch.suggested) == (script, suggested)
    with pytest.raises(TtsError) as refused:
        check_script(text, language, allow_mismatch=False, backend="piper")
    error = refused.value
    assert error.code is ErrorCode.UNSUPPORTED_SCRIPT and error.service_status == 422
    assert error.detail == {"script": script, "share": mismatch.share, "suggested_language": suggested}
    assert repr(suggested) in error.fix and "allow_script_mismatch" in error.fix
    check_script(text, language, allow_mismatch=True)  # the caller's choice: no refusal


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello there, how are you?", "en"),
        ("Hello there, how are you?", "ru"),  # Latin: every engine reads it somehow (names, brands)
        ("我们今天在会议室里讨论了", "zh"),
        ("今日はとても良い天気ですね", "ja"),
        ("Привет, как дела?", "uk"),
        ("The word 你好 means hello in Chinese.", "en"),  # a few foreign letters in a sentence
        ("12345 !!! ...", "en"),  # no letters at all
    ],
)
def test_text_the_language_reads_passes(text: str, language: str) -> None:
    assert script_mismatch(text, language) is None
    check_script(text, language, allow_mismatch=False)


def test_more_speech_than_the_limit_is_refused_with_the_estimate() -> None:
    assert check_length(lambda: 3000, 15.0, 600.0, "chars") == 200.0
    with pytest.raises(TtsError) as refused:
        check_length(lambda: 12_000, 20.0, 300.0, "phonemes", backend="piper")
    error = refused.value
    assert error.code is ErrorCode.TEXT_TOO_LONG and error.service_status == 413
    assert error.detail == {"estimated_audio_s": 600.0, "limit_s": 300.0, "spoken_units": 12_000, "unit": "phonemes"}
    assert "TTS_MAX_AUDIO_S" in error.fix and "600 s" in error.message
    assert http_status(error) == 413


def test_the_audio_limit_is_a_setting() -> None:
    assert load_settings({}).max_audio_s == 600.0
    assert load_settings({"TTS_MAX_AUDIO_S": "90"}).max_audio_s == 90.0
    with pytest.raises(ConfigError, match="TTS_MAX_AUDIO_S"):
        load_settings({"TTS_MAX_AUDIO_S": "0"})


def test_allow_script_mismatch_is_a_strict_request_field() -> None:
    settings = load_settings({})
    assert parse_synthesis_request(b'{"text": "hi"}', settings).allow_script_mismatch is False
    request = parse_synthesis_request(b'{"text": "hi", "allow_script_mismatch": true}', settings)
    assert request.allow_script_mismatch is True
    assert parse_synthesis_request(request.to_json(), settings) == request  # survives the hop to another instance
    with pytest.raises(TtsError) as refused:
        parse_synthesis_request(b'{"text": "hi", "allow_script_mismatch": "yes"}', settings)
    assert refused.value.code is ErrorCode.INVALID_REQUEST and "allow_script_mismatch" in refused.value.message


def test_the_http_edge_passes_allow_script_mismatch_through() -> None:
    body = {"model": "tts-1", "input": "你好", "voice": "default", "allow_script_mismatch": True}
    call = map_speech_request(body, EdgeSettings(), {}, {"allow_script_mismatch"})
    assert call.body["allow_script_mismatch"] is True
    with pytest.raises(TtsError) as refused:
        map_speech_request({**body, "allow_script_mismatch": 1}, EdgeSettings(), {}, {"allow_script_mismatch"})
    assert refused.value.detail == {"param": "allow_script_mismatch"}
