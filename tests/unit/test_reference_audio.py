"""Reference audio for cloning: bounded, validated as WAV, and only ever a private temp file."""

from __future__ import annotations

import stat

import pytest

from tests.support.backends import tone_wav
from tts_actor.backends.reference_audio import reference_wav_file, validate_reference
from tts_actor.errors import ErrorCode, TtsError


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"ID3\x04 this is an mp3, not a wav" * 10, "not a WAV"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "not a readable WAV"),
        (tone_wav(0.5), "at least 1 s"),
        (tone_wav(31.0, rate=8000), "at most 30 s"),
    ],
    ids=["not-wav", "truncated", "too-short", "too-long"],
)
def test_bad_reference_audio_is_an_invalid_request_with_a_fix(data: bytes, complaint: str) -> None:
    with pytest.raises(TtsError) as error:
        validate_reference(data)
    assert error.value.code is ErrorCode.INVALID_REQUEST
    assert complaint in error.value.message
    assert "WAV" in error.value.fix


def test_the_temp_file_is_private_and_gone_afterwards() -> None:
    data = tone_wav(2.0)
    with reference_wav_file(data) as path:
        assert path is not None and path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes()[:4] == b"RIFF"
    assert not path.exists()


def test_the_temp_file_is_deleted_when_the_engine_fails() -> None:
    with pytest.raises(RuntimeError), reference_wav_file(tone_wav(2.0)) as path:
        raise RuntimeError("engine crashed")
    assert path is not None and not path.exists()


def test_no_reference_gives_no_file() -> None:
    with reference_wav_file(None) as path:
        assert path is None
