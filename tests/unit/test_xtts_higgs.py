"""XTTS v2 and Higgs Audio against stand-in packages; their missing-package and no-GPU paths for real.

``coqui-tts`` (module ``TTS``) and ``boson-multimodal`` pin their own torch and
transformers and need GBs of weights: none of that runs here. The stand-ins
replace only those packages, with the real signatures (tests/unit/test_upstream_contracts.py
checks the names against the wheels) and the real side effects that matter: XTTS
0.28 re-saves ``model.pth`` through its module's ``torch.save`` while loading, and
the Higgs audio tokenizer asks its module's ``AutoModel`` for ``bosonai/hubert_base``.
They record what the adapter passes and return real arrays, which the adapter
converts for real.
"""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from statemachine import Reason, State
from tests.support.backends import install_stand_in, isolated_settings, tone_wav
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
class StandInArgs:
    gpt_max_text_tokens = 402


class StandInTokenizer:
    """TTS.tts.layers.xtts.tokenizer.VoiceBpeTokenizer: one token per character here."""

    def encode(self, txt: str, lang: str) -> list[int]:
        return [ord(c) for c in txt]


class StandInXtts:
    """Stands in for TTS.tts.models.xtts.Xtts (0.28): ``Xtts(config)``; the load re-saves an old checkpoint."""

    def __init__(self, config: Any) -> None:
        assert config.loaded_from.endswith("config.json")
        self.args = StandInArgs()
        self.tokenizer = StandInTokenizer()
        self.latent_sources: list[list[str]] = []
        self.inferences: list[dict[str, Any]] = []
        self.device = "?"

    @classmethod
    def init_from_config(cls, config: Any) -> StandInXtts:
        raise AssertionError("init_from_config is deprecated in coqui-tts 0.28; the adapter must call Xtts(config)")

    def _load_checkpoint(self, model_path: Path) -> dict:
        checkpoint = {"config": "legacy XttsConfig object", "model": {}}
        checkpoint["config"] = "converted to a dict"
        sys.modules["TTS.tts.models.xtts"].torch.save(checkpoint, model_path)  # as upstream, xtts.py ~651
        return checkpoint["model"]

    def load_checkpoint(
        self,
        config: Any,
        checkpoint_dir: str | None = None,
        checkpoint_path: str | None = None,
        vocab_path: str | None = None,
        eval: bool = True,
        strict: bool = True,
        use_deepspeed: bool = False,
        speaker_file_path: str | None = None,
    ) -> None:
        self.checkpoint_dir = checkpoint_dir
        self._load_checkpoint(Path(checkpoint_dir or "") / "model.pth")

    def to(self, device: str) -> StandInXtts:
        self.device = device
        return self

    def eval(self) -> None:
        pass

    def get_conditioning_latents(self, audio_path: list[str], max_ref_length: int = 30) -> tuple[str, str]:
        with wave.open(audio_path[0], "rb"):  # it must be a readable WAV while the call lasts
            pass
        self.latent_sources.append(audio_path)
        return f"latent:{Path(audio_path[0]).name}", f"embedding:{Path(audio_path[0]).name}"

    def inference(
        self,
        text: str,
        language: str,
        gpt_cond_latent: Any,
        speaker_embedding: Any,
        temperature: float = 0.75,
        length_penalty: float = 1.0,
        repetition_penalty: float = 10.0,
        top_k: int = 50,
        top_p: float = 0.85,
        do_sample: bool = True,
        num_beams: int = 1,
        speed: float = 1.0,
        enable_text_splitting: bool = False,
    ) -> dict:
        tokens = self.tokenizer.encode(text.strip().lower(), lang=language.split("-")[0])
        assert len(tokens) < self.args.gpt_max_text_tokens, "XTTS can only generate text with a maximum of 400 tokens."
        self.inferences.append(
            {"text": text, "language": language, "latent": gpt_cond_latent, "temperature": temperature, "speed": speed}
        )
        return {"wav": np.full(240 * len(text), 0.25, dtype=np.float32)}


class StandInXttsConfig:
    def load_json(self, file_name: str) -> None:
        self.loaded_from = file_name


class RealTorchSave:
    """The module's ``torch`` global: its ``save`` writes for real, as torch.save would."""

    saved: list[str] = []

    @staticmethod
    def save(obj: Any, f: Any) -> None:
        RealTorchSave.saved.append(str(f))
        Path(f).write_text(json.dumps(obj))


@pytest.fixture
def stand_in_tts(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    RealTorchSave.saved = []
    for name in ("TTS", "TTS.tts", "TTS.tts.configs", "TTS.tts.models"):
        install_stand_in(monkeypatch, name)
    install_stand_in(monkeypatch, "TTS.tts.configs.xtts_config", XttsConfig=StandInXttsConfig)
    install_stand_in(monkeypatch, "TTS.tts.models.xtts", Xtts=StandInXtts, torch=RealTorchSave)


def xtts_checkpoint(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "XTTS-v2"
    (checkpoint / "samples").mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model": "xtts"}))
    (checkpoint / "model.pth").write_bytes(b"fetched weights")
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
class StandInAutoModel:
    """What the audio tokenizer's module calls ``AutoModel``: a hub lookup unless pointed at local files."""

    calls: list[tuple[str, dict[str, Any]]] = []

    @classmethod
    def from_pretrained(cls, name: str, **kwargs: Any) -> str:
        cls.calls.append((str(name), kwargs))
        if not kwargs.get("local_files_only"):
            raise OSError(f"stand-in hub: {name} would be downloaded here")
        return f"semantic model from {name}"


class StandInServeEngine:
    """Stands in for boson_multimodal.serve.serve_engine.HiggsAudioServeEngine (0.1.1)."""

    instances: list[StandInServeEngine] = []
    reply_audio: Any = np.zeros(4800, dtype=np.float32)

    def __init__(
        self,
        model_name_or_path: str,
        audio_tokenizer_name_or_path: str,
        tokenizer_name_or_path: str | None = None,
        device: str = "cuda",
        torch_dtype: Any = "auto",
        kv_cache_lengths: list[int] | None = None,
    ) -> None:
        self.paths = (model_name_or_path, audio_tokenizer_name_or_path)
        self.device = device
        self.calls: list[dict[str, Any]] = []
        # HiggsAudioTokenizer(semantic_techer="hubert_base_general") inside load_higgs_audio_tokenizer
        module = sys.modules["boson_multimodal.audio_processing.higgs_audio_tokenizer"]
        self.semantic_model = module.AutoModel.from_pretrained("bosonai/hubert_base", trust_remote_code=True)
        StandInServeEngine.instances.append(self)

    def generate(
        self,
        chat_ml_sample: Any,
        max_new_tokens: int,
        temperature: float = 0.7,
        top_k: int | None = None,
        top_p: float = 0.95,
        stop_strings: list[str] | None = None,
        force_audio_gen: bool = False,
        ras_win_len: int | None = 7,
        ras_win_max_num_repeat: int = 2,
        seed: int | None = None,
    ) -> Any:
        turns = []
        for message in chat_ml_sample.messages:
            content = message.content
            if isinstance(content, StandInAudioContent):
                with wave.open(content.audio_url, "rb"):  # readable while the call lasts
                    pass
                content = ("audio", content.audio_url)
            turns.append((message.role, content))
        self.calls.append(
            {
                "turns": turns,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "force_audio_gen": force_audio_gen,
                "seed": seed,
            }
        )
        if isinstance(self.reply_audio, Exception):
            raise self.reply_audio
        return type("HiggsAudioResponse", (), {"audio": self.reply_audio, "sampling_rate": 24000})()


class StandInMessage:
    def __init__(self, role: str, content: Any, recipient: str | None = None) -> None:
        self.role, self.content = role, content


class StandInChatMLSample:
    def __init__(self, messages: list[StandInMessage], start_index: int | None = None) -> None:
        self.messages = messages


class StandInAudioContent:
    def __init__(self, audio_url: str, raw_audio: str | None = None) -> None:
        self.audio_url = audio_url


@pytest.fixture
def stand_in_boson(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    StandInServeEngine.instances = []
    StandInServeEngine.reply_audio = np.zeros(4800, dtype=np.float32)
    StandInAutoModel.calls = []
    for name in ("boson_multimodal", "boson_multimodal.serve", "boson_multimodal.audio_processing"):
        install_stand_in(monkeypatch, name)
    install_stand_in(monkeypatch, "boson_multimodal.audio_processing.higgs_audio_tokenizer", AutoModel=StandInAutoModel)
    install_stand_in(monkeypatch, "boson_multimodal.serve.serve_engine", HiggsAudioServeEngine=StandInServeEngine)
    install_stand_in(
        monkeypatch,
        "boson_multimodal.data_types",
        AudioContent=StandInAudioContent,
        ChatMLSample=StandInChatMLSample,
        Message=StandInMessage,
    )


def higgs_dirs(tmp_path: Path) -> dict[str, Path]:
    return {"model": tmp_path / "gen", "tokenizer": tmp_path / "tok", "semantic": tmp_path / "hubert"}


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
