"""Licence acceptance before any download, the install fix's commands, and the reference_* request fields."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from statemachine import Reason, State
from tests.support.backends import isolated_settings, tone_wav
from tests.support.helpers import torch_install_fix_start
from tts_actor.backends.mms import MmsBackend
from tts_actor.backends.xtts import SPEC as XTTS_SPEC
from tts_actor.config import Settings, load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.wire.messages import MAX_REFERENCE_TEXT_CHARS
from tts_actor.wire.request_parsing import parse_synthesis_request


async def settle(backend: MmsBackend, settings: Settings) -> BackendActor:
    actor = BackendActor(backend, settings, None, lambda event: None)
    await actor.start()
    try:
        await actor.wait_settled(30)
    finally:
        await actor.stop()
    return actor


async def test_a_licence_not_accepted_fails_before_any_download(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    settings = isolated_settings(tmp_path, backends=("mms",), language_overrides={"mms": ("en",)}, allow_download=True)
    actor = await settle(MmsBackend(settings), settings)
    assert actor.lifecycle.current is State.FAILED
    assert actor.lifecycle.reason is Reason.LICENSE_NOT_ACCEPTED
    assert "CC BY-NC 4.0" in (actor.lifecycle.message or "")
    assert "TTS_ACCEPT_LICENSES=cc-by-nc-4.0" in (actor.lifecycle.fix or "")
    assert not (tmp_path / "cache").exists(), "weights were fetched under a licence nobody accepted"


async def test_an_accepted_licence_loads(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.support.tiny_vits import make_tiny_vits

    model = make_tiny_vits(tmp_path / "en")
    settings = isolated_settings(
        tmp_path,
        backends=("mms",),
        language_overrides={"mms": ("en",)},
        local_model_dirs={"mms": model},
        accepted_licenses=frozenset({"cpml", "cc-by-nc-4.0"}),
    )
    actor = await settle(MmsBackend(settings), settings)
    assert actor.lifecycle.current is State.LOADED


def test_accepted_licences_come_from_the_environment() -> None:
    assert load_settings({}).accepted_licenses == frozenset()
    settings = load_settings({"TTS_ACCEPT_LICENSES": " CPML, cc-by-nc-4.0 ,"})
    assert settings.accepted_licenses == frozenset({"cpml", "cc-by-nc-4.0"})


def test_the_install_fix_names_commands_that_exist() -> None:
    fix = XTTS_SPEC.install_fix
    assert fix.startswith(torch_install_fix_start("xtts"))
    # from the installed metadata: what a user of a built wheel runs
    assert "'coqui-tts[codec,ja,zh]<=0.28.0,>=0.27.4'" in fix or "'coqui-tts[codec,ja,zh]>=0.27.4,<=0.28.0'" in fix


def request_body(**fields: object) -> bytes:
    return json.dumps({"text": "Hello.", **fields}).encode()


def test_reference_text_and_language_travel_with_the_clip() -> None:
    clip = base64.b64encode(tone_wav(2.0)).decode()
    request = parse_synthesis_request(
        request_body(reference_audio=clip, reference_text="  The quick brown fox. ", reference_language="DE"),
        Settings(),
    )
    assert (request.reference_text, request.reference_language) == ("The quick brown fox.", "de")
    again = parse_synthesis_request(request.to_json(), Settings())
    assert (again.reference_text, again.reference_language) == ("The quick brown fox.", "de")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"reference_text": "no clip"}, "without 'reference_audio'"),
        ({"reference_text": "x" * (MAX_REFERENCE_TEXT_CHARS + 1), "with_clip": True}, "limit"),
        ({"reference_text": "", "with_clip": True}, "non-empty"),
        ({"reference_text": 5, "with_clip": True}, "non-empty"),
        ({"reference_text": "bell\x07", "with_clip": True}, "control character"),
        ({"reference_language": "german", "with_clip": True}, "ISO 639-1"),
    ],
)
def test_bad_reference_fields_are_invalid_requests(fields: dict[str, object], words: str) -> None:
    if fields.pop("with_clip", False):
        fields["reference_audio"] = base64.b64encode(tone_wav(2.0)).decode()
    with pytest.raises(TtsError) as error:
        parse_synthesis_request(request_body(**fields), Settings())
    assert error.value.code is ErrorCode.INVALID_REQUEST
    assert words in error.value.message
