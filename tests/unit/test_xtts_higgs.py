"""XTTS v2 and Higgs Audio against stand-in packages; their missing-package and no-GPU paths for real.

The stand-ins, what they keep of the real packages and why they are fakes, are described in
tests/support/stand_in_engines.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from statemachine import Reason, State
from tests.support.backends import isolated_settings, tone_wav
from tests.support.stand_in_engines import (  # noqa: F401  (stand_in_tts, stand_in_boson: fixtures)
    RealTorchSave,
    StandInAutoModel,
    StandInServeEngine,
    higgs_dirs,
    stand_in_boson,
    stand_in_tts,
    xtts_checkpoint,
)
from tts_actor.backends import higgs
from tts_actor.backends.base import BackendFailure, missing_packages
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.higgs import HiggsAudioBackend
from tts_actor.backends.xtts import XttsBackend, default_speaker_source
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.actor import BackendActor
from tts_actor.wire.messages import SynthesisOptions, SynthesisRequest


@pytest.mark.parametrize(
    ("adapter", "extra"), [(XttsBackend, "xtts"), (HiggsAudioBackend, "higgs"), (ChatterboxBackend, "chatterbox")]
)
async def test_without_the_package_it_fails_as_package_missing(tmp_path: Path, adapter: type, extra: str) -> None:
    if not missing_packages(adapter.spec.packages):
        pytest.skip(f"{extra}'s packages are installed here")
    settings = isolated_settings(tmp_path)
    backend = adapter(settings)
    events: list[object] = []
    actor = BackendActor(backend, settings, None, events.append)
    await actor.start()
    try:
        state = await actor.wait_settled(5)
    finally:
        await actor.stop()
    assert state is State.FAILED
    assert actor.lifecycle.reason is Reason.PACKAGE_MISSING
    assert f"pip install -e '.[{extra}]'" in (actor.lifecycle.fix or "")
    assert extra in (actor.lifecycle.message or "")


# --- XTTS ----------------------------------------------------------------------------------------
def test_default_speaker_prefers_the_language_sample(tmp_path: Path) -> None:
    checkpoint = xtts_checkpoint(tmp_path)
    assert default_speaker_source(checkpoint, "de").name == "de_sample.wav"  # type: ignore[union-attr]
    assert default_speaker_source(checkpoint, "ja").name == "en_sample.wav"  # type: ignore[union-attr]
    (checkpoint / "samples" / "en_sample.wav").unlink()
    assert default_speaker_source(checkpoint, "ja").name == "de_sample.wav"  # type: ignore[union-attr]
    assert default_speaker_source(tmp_path / "nothing", "en") is None


@pytest.mark.usefixtures("stand_in_tts")
def test_xtts_loads_the_checkpoint_and_speaks_with_the_sample_voice(tmp_path: Path) -> None:
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en", "zh")}))
    assert backend.languages == ("en", "zh")
    checkpoint = xtts_checkpoint(tmp_path)
    (checkpoint / "model.pth").chmod(0o444)  # a read-only cache must load too
    backend.load({"default": checkpoint})
    assert (checkpoint / "model.pth").read_bytes() == b"fetched weights", "the load rewrote the cached model.pth"
    assert RealTorchSave.saved == []
    import TTS.tts.models.xtts as module  # the stand-in, its torch global restored after the load

    assert module.torch is RealTorchSave
    model = backend._model
    assert model.device == "cpu"
    assert model.checkpoint_dir.endswith("XTTS-v2")
    assert len(model.latent_sources) == 1, "one sample serves both languages; computed once"

    audio = backend.synthesize(
        SynthesisRequest(text="你好", language="zh", options=SynthesisOptions(temperature=0.5, speed=1.5)),
        backend.default_voice("zh"),  # type: ignore[arg-type]
    )
    (call,) = model.inferences
    assert call == {
        "text": "你好",
        "language": "zh-cn",
        "latent": "latent:en_sample.wav",
        "temperature": 0.5,
        "speed": 1.5,
    }
    assert audio.sample_rate == 24000 and len(audio.pcm) == 2 * 240 * 2


@pytest.mark.usefixtures("stand_in_tts")
def test_xtts_clones_from_the_reference_audio_in_a_temp_file(tmp_path: Path) -> None:
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en",)}))
    backend.load({"default": xtts_checkpoint(tmp_path)})
    backend.synthesize(
        SynthesisRequest(text="Hello", reference_audio=tone_wav(4.0)),
        backend.default_voice("en"),  # type: ignore[arg-type]
    )
    model = backend._model
    reference = Path(model.latent_sources[-1][0])
    assert reference.name.startswith("tts-reference-")
    assert not reference.exists()
    assert model.inferences[-1]["latent"] == f"latent:{reference.name}"
    backend.unload()
    assert backend._model is None


@pytest.mark.usefixtures("stand_in_tts")
def test_xtts_refuses_text_over_its_token_limit_with_a_fix(tmp_path: Path) -> None:
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en",)}))
    backend.load({"default": xtts_checkpoint(tmp_path)})
    voice = backend.default_voice("en")
    assert voice is not None
    with pytest.raises(TtsError) as error:
        backend.synthesize(SynthesisRequest(text="a" * 400), voice)
    assert error.value.code is ErrorCode.TEXT_TOO_LONG and error.value.detail == {"tokens": 400, "limit": 400}
    backend.synthesize(SynthesisRequest(text="a" * 399), voice)
    assert len(backend._model.inferences) == 1


@pytest.mark.usefixtures("stand_in_tts")
def test_xtts_without_any_default_voice_is_corrupt_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "bare"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en",)}))
    with pytest.raises(BackendFailure) as failure:
        backend.load({"default": checkpoint})
    assert failure.value.reason is Reason.CORRUPT_MODEL


# --- Higgs Audio ---------------------------------------------------------------------------------
def test_higgs_fetches_model_tokenizer_and_semantic_model(tmp_path: Path) -> None:
    backend = HiggsAudioBackend(isolated_settings(tmp_path))
    refs = {ref.key: ref.repo_id for ref in backend.models()}
    assert refs == {
        "model": "bosonai/higgs-audio-v2-generation-3B-base",
        "tokenizer": "bosonai/higgs-audio-v2-tokenizer",
        "semantic": "bosonai/hubert_base",
    }
    assert backend.spec.languages == ("en", "zh", "de", "ko")


@pytest.mark.usefixtures("stand_in_boson")
def test_higgs_loads_the_semantic_model_from_the_fetched_copy_on_the_cpu(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    backend = HiggsAudioBackend(isolated_settings(tmp_path))
    backend.load(higgs_dirs(tmp_path))
    (engine,) = StandInServeEngine.instances
    assert engine.paths == (str(tmp_path / "gen"), str(tmp_path / "tok")) and engine.device == "cpu"
    assert StandInAutoModel.calls == [(str(tmp_path / "hubert"), {"trust_remote_code": True, "local_files_only": True})]
    import boson_multimodal.audio_processing.higgs_audio_tokenizer as module  # the stand-in, restored after the load

    assert module.AutoModel is StandInAutoModel


@pytest.mark.usefixtures("stand_in_boson")
def test_higgs_clones_with_the_reference_transcript(tmp_path: Path) -> None:
    backend = HiggsAudioBackend(isolated_settings(tmp_path))
    backend.load(higgs_dirs(tmp_path))
    (engine,) = StandInServeEngine.instances

    audio = backend.synthesize(
        SynthesisRequest(
            text="Say it warmly.",
            options=SynthesisOptions(temperature=0.7, seed=11),
            reference_audio=tone_wav(5),
            reference_text="The quick brown fox.",
        ),
        backend.default_voice("en"),  # type: ignore[arg-type]
    )
    (call,) = engine.calls
    assert [role for role, _ in call["turns"]] == ["system", "user", "assistant", "user"]
    assert call["turns"][1] == ("user", "The quick brown fox.")
    kind, reference = call["turns"][2][1]
    assert kind == "audio" and not Path(reference).exists()
    assert call["turns"][-1] == ("user", "Say it warmly.")
    assert (call["temperature"], call["seed"], call["force_audio_gen"]) == (0.7, 11, True)
    assert call["max_new_tokens"] > 0
    assert audio.sample_rate == 24000 and audio.duration_s == pytest.approx(0.2)

    backend.synthesize(
        SynthesisRequest(text="No transcript.", reference_audio=tone_wav(5)), backend.default_voice("en")
    )  # type: ignore[arg-type]
    assert engine.calls[-1]["turns"][1] == ("user", higgs.REFERENCE_TRANSCRIPT)
    backend.synthesize(SynthesisRequest(text="Plain."), backend.default_voice("en"))  # type: ignore[arg-type]
    assert [role for role, _ in engine.calls[-1]["turns"]] == ["system", "user"]
    backend.unload()
    assert backend._engine is None


@pytest.mark.parametrize("reply", [None, np.zeros(0, dtype=np.float32), IndexError("index 0 is out of bounds")])
@pytest.mark.usefixtures("stand_in_boson")
def test_higgs_reply_without_audio_is_a_synthesis_error(tmp_path: Path, reply: Any) -> None:
    backend = HiggsAudioBackend(isolated_settings(tmp_path))
    backend.load(higgs_dirs(tmp_path))
    StandInServeEngine.reply_audio = reply
    with pytest.raises(TtsError) as error:
        backend.synthesize(SynthesisRequest(text="Hello."), backend.default_voice("en"))  # type: ignore[arg-type]
    assert error.value.code is ErrorCode.SYNTHESIS_FAILED and "without audio" in error.value.message
