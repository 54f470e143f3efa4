"""XTTS v2 and Higgs Audio against stand-in packages; their missing-package and no-GPU paths for real.

``coqui-tts`` (module ``TTS``) and ``boson-multimodal`` pin their own torch and
need GBs of weights, and Higgs needs a CUDA GPU: none of that runs here. The
stand-ins replace only those packages (and, for Higgs, the GPU check): they
record what the adapter passes and return real arrays, which the adapter
converts for real.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from statemachine import Reason, State
from tts_actor.actor import BackendActor
from tts_actor.backends import higgs
from tts_actor.backends.base import BackendFailure, missing_packages
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.higgs import HiggsAudioBackend
from tts_actor.backends.xtts import XttsBackend, default_speaker_source
from tts_actor.messages import SynthesisOptions, SynthesisRequest

from ._backend_helpers import install_stand_in, isolated_settings, tone_wav


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
    assert f"pip install 'tts-actor[{extra}]'" in (actor.lifecycle.fix or "")
    assert extra in (actor.lifecycle.message or "")


# --- XTTS ----------------------------------------------------------------------------------------
class StandInXtts:
    """Stands in for TTS.tts.models.xtts.Xtts."""

    def __init__(self) -> None:
        self.latent_sources: list[list[str]] = []
        self.inferences: list[dict[str, Any]] = []
        self.device = "?"

    @classmethod
    def init_from_config(cls, config: Any) -> StandInXtts:
        assert config.loaded_from.endswith("config.json")
        return cls()

    def load_checkpoint(self, config: Any, checkpoint_dir: str, use_deepspeed: bool = False) -> None:
        self.checkpoint_dir = checkpoint_dir

    def to(self, device: str) -> StandInXtts:
        self.device = device
        return self

    def eval(self) -> None:
        pass

    def get_conditioning_latents(self, audio_path: list[str]) -> tuple[str, str]:
        with wave.open(audio_path[0], "rb"):  # it must be a readable WAV while the call lasts
            pass
        self.latent_sources.append(audio_path)
        return f"latent:{Path(audio_path[0]).name}", f"embedding:{Path(audio_path[0]).name}"

    def inference(self, text: str, language: str, gpt_cond_latent: Any, speaker_embedding: Any, **kw: Any) -> dict:
        self.inferences.append({"text": text, "language": language, "latent": gpt_cond_latent, **kw})
        return {"wav": np.full(240 * len(text), 0.25, dtype=np.float32)}


class StandInXttsConfig:
    def load_json(self, path: str) -> None:
        self.loaded_from = path


@pytest.fixture
def stand_in_tts(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    for name in ("TTS", "TTS.tts", "TTS.tts.configs", "TTS.tts.models"):
        install_stand_in(monkeypatch, name)
    install_stand_in(monkeypatch, "TTS.tts.configs.xtts_config", XttsConfig=StandInXttsConfig)
    install_stand_in(monkeypatch, "TTS.tts.models.xtts", Xtts=StandInXtts)


def xtts_checkpoint(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "XTTS-v2"
    (checkpoint / "samples").mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model": "xtts"}))
    (checkpoint / "samples" / "en_sample.wav").write_bytes(tone_wav(2.0))
    (checkpoint / "samples" / "de_sample.wav").write_bytes(tone_wav(2.0))
    return checkpoint


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
    backend.load({"default": xtts_checkpoint(tmp_path)})
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
def test_xtts_without_any_default_voice_is_corrupt_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "bare"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en",)}))
    with pytest.raises(BackendFailure) as failure:
        backend.load({"default": checkpoint})
    assert failure.value.reason is Reason.CORRUPT_MODEL


# --- Higgs Audio ---------------------------------------------------------------------------------
class StandInServeEngine:
    """Stands in for boson_multimodal.serve.serve_engine.HiggsAudioServeEngine."""

    instances: list[StandInServeEngine] = []

    def __init__(self, model_name_or_path: str, audio_tokenizer_name_or_path: str, device: str) -> None:
        self.paths = (model_name_or_path, audio_tokenizer_name_or_path)
        self.device = device
        self.calls: list[dict[str, Any]] = []
        StandInServeEngine.instances.append(self)

    def generate(self, chat_ml_sample: Any, **kwargs: Any) -> Any:
        turns = []
        for message in chat_ml_sample.messages:
            content = message.content
            if isinstance(content, StandInAudioContent):
                with wave.open(content.audio_url, "rb"):  # readable while the call lasts
                    pass
                content = ("audio", content.audio_url)
            turns.append((message.role, content))
        self.calls.append({"turns": turns, **kwargs})
        return type("Response", (), {"audio": np.zeros(4800, dtype=np.float32), "sampling_rate": 24000})()


class StandInMessage:
    def __init__(self, role: str, content: Any) -> None:
        self.role, self.content = role, content


class StandInChatMLSample:
    def __init__(self, messages: list[StandInMessage]) -> None:
        self.messages = messages


class StandInAudioContent:
    def __init__(self, audio_url: str) -> None:
        self.audio_url = audio_url


@pytest.fixture
def stand_in_boson(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    StandInServeEngine.instances = []
    install_stand_in(monkeypatch, "boson_multimodal")
    install_stand_in(monkeypatch, "boson_multimodal.serve")
    install_stand_in(monkeypatch, "boson_multimodal.serve.serve_engine", HiggsAudioServeEngine=StandInServeEngine)
    install_stand_in(
        monkeypatch,
        "boson_multimodal.data_types",
        AudioContent=StandInAudioContent,
        ChatMLSample=StandInChatMLSample,
        Message=StandInMessage,
    )


def test_higgs_fetches_model_and_tokenizer(tmp_path: Path) -> None:
    refs = {ref.key: ref.repo_id for ref in HiggsAudioBackend(isolated_settings(tmp_path)).models()}
    assert refs == {
        "model": "bosonai/higgs-audio-v2-generation-3B-base",
        "tokenizer": "bosonai/higgs-audio-v2-tokenizer",
    }


def test_higgs_without_a_gpu_fails_with_a_fix(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(BackendFailure) as failure:
        HiggsAudioBackend(isolated_settings(tmp_path)).load({"model": tmp_path, "tokenizer": tmp_path})
    assert failure.value.reason is Reason.LOAD_ERROR
    assert "CUDA" in failure.value.message and "TTS_BACKENDS" in failure.value.fix


@pytest.mark.usefixtures("stand_in_boson")
def test_higgs_builds_the_conversation_with_the_cloned_voice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(higgs, "pick_device", lambda spec: "cuda")  # stands in for a GPU
    backend = HiggsAudioBackend(isolated_settings(tmp_path))
    backend.load({"model": tmp_path / "gen", "tokenizer": tmp_path / "tok"})
    (engine,) = StandInServeEngine.instances
    assert engine.paths == (str(tmp_path / "gen"), str(tmp_path / "tok")) and engine.device == "cuda"

    audio = backend.synthesize(
        SynthesisRequest(text="Say it warmly.", options=SynthesisOptions(temperature=0.7), reference_audio=tone_wav(5)),
        backend.default_voice("en"),  # type: ignore[arg-type]
    )
    (call,) = engine.calls
    roles = [role for role, _ in call["turns"]]
    assert roles == ["system", "user", "assistant", "user"]
    kind, reference = call["turns"][2][1]
    assert kind == "audio" and not Path(reference).exists()
    assert call["turns"][-1] == ("user", "Say it warmly.")
    assert call["temperature"] == 0.7 and call["max_new_tokens"] > 0
    assert audio.sample_rate == 24000 and audio.duration_s == pytest.approx(0.2)

    backend.synthesize(SynthesisRequest(text="Plain."), backend.default_voice("en"))  # type: ignore[arg-type]
    assert [role for role, _ in engine.calls[-1]["turns"]] == ["system", "user"]
    backend.unload()
    assert backend._engine is None
