"""Chatterbox: the adapter's calls against a stand-in ``chatterbox`` package that behaves like 0.1.7.

The stand-in, what it keeps of the real package and why it is a fake, is described in
tests/support/stand_in_chatterbox.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine import Reason
from tests.support.backends import isolated_settings, tone_wav
from tests.support.stand_in_chatterbox import (  # noqa: F401  (stand_in_chatterbox: a fixture)
    BUILTIN_HZ,
    HUB_CALLS,
    StandInModel,
    checkpoint,
    hub_download,
    listen,
    stand_in_chatterbox,
)
from tts_actor.backends.base import BackendFailure
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisOptions, SynthesisRequest


def test_models_are_fetched_never_from_pretrained(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("en", "fr")}))
    refs = {ref.key: ref for ref in backend.models()}
    assert set(refs) == {"english", "multilingual"}
    assert refs["english"].repo_id == refs["multilingual"].repo_id == "ResembleAI/chatterbox"
    assert "t3_cfg.safetensors" in (refs["english"].allow_patterns or ())
    assert {"t3_mtl23ls_v2.safetensors", "Cangjie5_TC.json"} <= set(refs["multilingual"].allow_patterns or ())
    assert ChatterboxBackend(isolated_settings(tmp_path)).languages == ("en",)


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_a_cloned_voice_never_reaches_the_next_caller(tmp_path: Path) -> None:
    """Request 1 clones a 440 Hz voice; request 2 sends no reference and must speak the built-in 150 Hz one."""
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": checkpoint(tmp_path / "en")})
    voice = backend.default_voice("en")
    assert voice is not None
    before = listen(backend.synthesize(SynthesisRequest(text="Before anyone cloned."), voice))

    cloned = backend.synthesize(
        SynthesisRequest(text="This is my voice.", reference_audio=tone_wav(3.0, hz=440.0)), voice
    )
    after = backend.synthesize(SynthesisRequest(text="Someone else speaking.", options=SynthesisOptions()), voice)

    assert before == pytest.approx(BUILTIN_HZ, abs=5)
    assert listen(cloned) == pytest.approx(440, abs=5)
    assert listen(after) == pytest.approx(BUILTIN_HZ, abs=5), "request 2 spoke with request 1's cloned voice"
    assert backend._english.conds.t3["hz"] == BUILTIN_HZ, "the cloned voice stayed in the model after the call"


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_an_exaggeration_does_not_stick_to_the_built_in_voice(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": checkpoint(tmp_path / "en")})
    voice = backend.default_voice("en")
    assert voice is not None
    backend.synthesize(SynthesisRequest(text="Wild!", options=SynthesisOptions(exaggeration=1.5)), voice)
    assert backend._builtin[id(backend._english)].t3["emotion"] == 0.5
    backend.synthesize(SynthesisRequest(text="Calm."), voice)
    assert [call["exaggeration"] for call in backend._english.calls] == [1.5, 0.5]


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_english_passes_options_and_a_temp_reference_that_is_deleted(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": checkpoint(tmp_path / "ckpt")})
    assert StandInModel.loaded == [("ChatterboxTTS", tmp_path / "ckpt", "cpu")]

    request = SynthesisRequest(
        text="Clone me.",
        options=SynthesisOptions(exaggeration=0.9, cfg_weight=0.3, temperature=0.6, seed=5),
        reference_audio=tone_wav(3.0),
    )
    audio = backend.synthesize(request, backend.default_voice("en"))  # type: ignore[arg-type]

    (call,) = backend._english.calls
    assert call == {"text": "Clone me.", "exaggeration": 0.9, "voice_hz": 220.0, "cfg_weight": 0.3, "temperature": 0.6}
    (prompt,) = backend._english.prompts
    assert prompt.name.startswith("tts-reference-") and not prompt.exists(), "the reference outlived the call"
    assert audio.sample_rate == 24000
    assert audio.duration_s == pytest.approx(0.05 * len("Clone me."), abs=0.01)


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_other_languages_use_the_multilingual_model_and_its_local_cangjie_table(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("en", "de", "zh")}))
    backend.load({"english": checkpoint(tmp_path / "en"), "multilingual": checkpoint(tmp_path / "mtl", True)})
    assert [name for name, _, _ in StandInModel.loaded] == ["ChatterboxTTS", "ChatterboxMultilingualTTS"]
    assert HUB_CALLS == [], "loading reached for the hub"
    assert backend._multilingual.cangjie.table == '["日\\ta"]'
    import chatterbox.models.tokenizers.tokenizer as tokenizer  # the stand-in, restored after the load

    assert tokenizer.hf_hub_download is hub_download

    backend.synthesize(SynthesisRequest(text="Guten Tag.", language="de"), backend.default_voice("de"))  # type: ignore[arg-type]
    (call,) = backend._multilingual.calls
    assert call["language_id"] == "de"
    # the built-in voice is an English speaker: no accent transfer onto German
    assert (call["exaggeration"], call["cfg_weight"], call["temperature"]) == (0.5, 0.0, 0.8)
    assert backend._english.calls == []


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_cfg_weight_is_zero_only_when_the_reference_speaks_another_language(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("fr",)}))
    backend.load({"multilingual": checkpoint(tmp_path / "mtl", True)})
    voice = backend.default_voice("fr")
    assert voice is not None
    for reference_language in ("fr", None, "en"):
        backend.synthesize(
            SynthesisRequest(
                text="Bonjour.", language="fr", reference_audio=tone_wav(2.0), reference_language=reference_language
            ),
            voice,
        )
    backend.synthesize(
        SynthesisRequest(
            text="Bonjour.",
            language="fr",
            reference_audio=tone_wav(2.0),
            reference_language="en",
            options=SynthesisOptions(cfg_weight=0.4),
        ),
        voice,
    )
    assert [call["cfg_weight"] for call in backend._multilingual.calls] == [0.5, 0.5, 0.0, 0.4]


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_a_multilingual_checkpoint_without_the_cangjie_table_is_corrupt(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path, language_overrides={"chatterbox": ("zh",)}))
    with pytest.raises(BackendFailure) as failure:
        backend.load({"multilingual": checkpoint(tmp_path / "mtl")})
    assert failure.value.reason is Reason.CORRUPT_MODEL and "Cangjie5_TC.json" in failure.value.message
    assert HUB_CALLS == []


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_without_a_built_in_voice_a_reference_is_required(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": checkpoint(tmp_path / "en", builtin_hz=None)})
    voice = backend.default_voice("en")
    assert voice is not None
    with pytest.raises(TtsError) as error:
        backend.synthesize(SynthesisRequest(text="Hello."), voice)
    assert error.value.code is ErrorCode.INVALID_REQUEST and "reference_audio" in error.value.fix
    cloned = backend.synthesize(SynthesisRequest(text="Hello.", reference_audio=tone_wav(2.0, hz=300.0)), voice)
    assert listen(cloned) == pytest.approx(300, abs=5)
    assert backend._english.conds is None


@pytest.mark.usefixtures("stand_in_chatterbox")
def test_bad_reference_audio_never_reaches_the_engine(tmp_path: Path) -> None:
    backend = ChatterboxBackend(isolated_settings(tmp_path))
    backend.load({"english": checkpoint(tmp_path)})
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
    backend.load({"english": checkpoint(tmp_path / "en"), "multilingual": checkpoint(tmp_path / "mtl", True)})
    backend.unload()
    assert backend._english is None and backend._multilingual is None and backend._builtin == {}
