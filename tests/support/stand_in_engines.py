"""Stand-in ``TTS`` (coqui-tts: XTTS v2) and ``boson_multimodal`` (Higgs Audio) packages: fakes, the real need GBs.

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

from tests.support.backends import install_stand_in, tone_wav


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
