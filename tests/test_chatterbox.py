"""Chatterbox: the missing package for real; the adapter's calls against a stand-in ``chatterbox`` module.

``chatterbox-tts`` pins its own torch and needs GBs of weights, so it is never
installed here. The stand-in below replaces only that package: it records what
the adapter passes (checkpoint dir, device, options, the reference file) and
returns a real torch tensor, which the adapter converts for real.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.messages import SynthesisOptions, SynthesisRequest

from ._backend_helpers import install_stand_in, isolated_settings, tone_wav

# the missing-package path of all three stand-in engines: tests/test_xtts_higgs.py


class StandInModel:
    """Stands in for ChatterboxTTS / ChatterboxMultilingualTTS: records calls, returns a tensor."""

    sr = 24000
    loaded: ClassVar[list[tuple[str, Path, str]]] = []

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def from_local(cls, ckpt_dir: Path, device: str) -> StandInModel:
        model = cls(cls.__name__)
        StandInModel.loaded.append((cls.__name__, Path(ckpt_dir), device))
        return model

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> StandInModel:
        raise AssertionError("from_pretrained retries the hub for ~23 s; the adapter must use from_local")

    def generate(self, text: str, **kwargs: Any) -> Any:
        import torch

        prompt = kwargs.get("audio_prompt_path")
        call = {"text": text, **kwargs}
        if prompt is not None:  # what the engine would read, read while the call lasts
            with wave.open(prompt, "rb") as wav:
                call["prompt_seconds"] = wav.getnframes() / wav.getframerate()
        self.calls.append(call)
        return torch.full((1, 100 * len(text)), 0.5)


class ChatterboxTTS(StandInModel):
    pass


class ChatterboxMultilingualTTS(StandInModel):
    pass


@pytest.fixture
def stand_in_chatterbox(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    StandInModel.loaded = []
    install_stand_in(monkeypatch, "chatterbox")
    install_stand_in(monkeypatch, "chatterbox.tts", ChatterboxTTS=ChatterboxTTS)
    install_stand_in(monkeypatch, "chatterbox.mtl_tts", ChatterboxMultilingualTTS=ChatterboxMultilingualTTS)


def test_models_are_fetched_never_from_pretrained(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("en", "fr")}))
    refs = {ref.key: ref for ref in backend.models()}
    assert set(refs) == {"english", "multilingual"}
    assert refs["english"].repo_id == refs["multilingual"].repo_id == "ResembleAI/chatterbox"
    assert "t3_cfg.safetensors" in (refs["english"].allow_patterns or ())
    assert "t3_mtl23ls_v2.safetensors" in (refs["multilingual"].allow_patterns or ())
    assert ChatterboxBackend(isolated_settings(tmp_path)).languages == ("en",)


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_english_passes_options_and_a_temp_reference_that_is_deleted(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": tmp_path / "ckpt"})
    assert StandInModel.loaded == [("ChatterboxTTS", tmp_path / "ckpt", "cpu")]

    request = SynthesisRequest(
        text="Clone me.",
        options=SynthesisOptions(exaggeration=0.9, cfg_weight=0.3, temperature=0.6, seed=5),
        reference_audio=tone_wav(3.0),
    )
    audio = backend.synthesize(request, backend.default_voice("en"))  # type: ignore[arg-type]

    (call,) = backend._english.calls
    prompt = Path(call.pop("audio_prompt_path"))
    assert call == {
        "text": "Clone me.",
        "exaggeration": 0.9,
        "cfg_weight": 0.3,
        "temperature": 0.6,
        "prompt_seconds": 3.0,
    }
    assert not prompt.exists(), "the reference temp file outlived the call"
    assert audio.sample_rate == 24000
    assert len(audio.pcm) == 2 * 100 * len("Clone me.")
    assert audio.pcm[:2] == int(0.5 * 32767).to_bytes(2, "little", signed=True)


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_other_languages_go_to_the_multilingual_model_with_language_id(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("en", "de")}))
    backend.load({"english": tmp_path / "en", "multilingual": tmp_path / "mtl"})
    assert [name for name, _, _ in StandInModel.loaded] == ["ChatterboxTTS", "ChatterboxMultilingualTTS"]

    backend.synthesize(SynthesisRequest(text="Guten Tag.", language="de"), backend.default_voice("de"))  # type: ignore[arg-type]

    (call,) = backend._multilingual.calls
    assert call["language_id"] == "de"
    assert "audio_prompt_path" not in call
    assert (call["exaggeration"], call["cfg_weight"], call["temperature"]) == (0.5, 0.5, 0.8)
    assert backend._english.calls == []


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_bad_reference_audio_never_reaches_the_engine(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": tmp_path})
    with pytest.raises(TtsError) as error:
        backend.synthesize(
            SynthesisRequest(text="x", reference_audio=tone_wav(40.0, rate=8000)),
            backend.default_voice("en"),  # type: ignore[arg-type]
        )
    assert error.value.code is ErrorCode.INVALID_REQUEST
    assert backend._english.calls == []


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_unload_drops_both_models(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("en", "es")}))
    backend.load({"english": tmp_path, "multilingual": tmp_path})
    backend.unload()
    assert backend._english is None and backend._multilingual is None
