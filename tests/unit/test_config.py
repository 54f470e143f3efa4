"""Settings from the environment: defaults, parsing and refusals."""

from __future__ import annotations

import pytest

from tts_actor.config import DEFAULT_BACKENDS, ConfigError, load_settings


def test_defaults_match_the_readme() -> None:
    s = load_settings({})
    assert s.backends == DEFAULT_BACKENDS and s.nats_url is None and s.embedded_nats_port == 4222
    assert (s.max_text_chars, s.max_wait_ms, s.max_request_bytes) == (5000, 30_000, 4 * 1024 * 1024)
    assert (s.download_connect_timeout_s, s.download_read_timeout_s) == (3.0, 10.0)
    assert s.allow_download is True and s.metrics_port == 0


def test_a_language_order_puts_its_backends_first_then_the_rest() -> None:
    s = load_settings({"TTS_BACKENDS": "piper,mms,xtts", "TTS_LANGUAGE_PRIORITY": "en=xtts;de=mms,xtts"})
    assert s.priority_for("en") == ("xtts", "piper", "mms")
    assert s.priority_for("de") == ("mms", "xtts", "piper")
    assert s.priority_for("fr") == ("piper", "mms", "xtts")


@pytest.mark.parametrize(
    "env",
    [
        {"TTS_BACKENDS": "piper,espeak"},
        {"TTS_LANGUAGE_PRIORITY": "en=pipr"},
        {"TTS_LANGUAGE_PRIORITY": "en"},
        {"TTS_LOG_LEVEL": "loud"},
        {"TTS_LOG_FORMAT": "xml"},
        {"TTS_ALLOW_DOWNLOAD": "maybe"},
        {"TTS_MAX_TEXT_CHARS": "0"},
        {"TTS_DOWNLOAD_READ_TIMEOUT_S": "-1"},
        {"TTS_PIPER_VOICES_DIR": "/nonexistent/voices"},
    ],
)
def test_unusable_values_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert next(iter(env)) in str(info.value)


def test_offline_flag_turns_downloads_off() -> None:
    assert load_settings({"HF_HUB_OFFLINE": "1"}).allow_download is False
    assert load_settings({"TTS_ALLOW_DOWNLOAD": "0"}).allow_download is False
