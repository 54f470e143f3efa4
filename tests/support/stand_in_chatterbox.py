"""A stand-in ``chatterbox`` package that behaves like chatterbox-tts 0.1.7 (a fake: the real one needs GBs).

``chatterbox-tts`` pins its own torch and needs GBs of weights, so it is never
installed here. The stand-in replaces only that package and follows its real
signatures and state (tests/unit/test_upstream_contracts.py checks the names against
the wheel): ``from_local`` reads ``conds.pt`` as the built-in voice,
``generate(audio_prompt_path=...)`` replaces ``model.conds`` for good (upstream's
``prepare_conditionals``) and swaps the exaggeration into the conditionals it holds,
and the multilingual tokenizer asks ``hf_hub_download`` for ``Cangjie5_TC.json``.
Its "voice" is a pitch: the built-in one from ``conds.pt``, a cloned one measured
from the reference clip; it speaks a sine at that pitch, which the tests measure.
Shared by the adapter's unit tests, the voice-profile tests and the upstream contract check.
"""

from __future__ import annotations

import importlib.machinery
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.support.backends import install_stand_in
from tts_actor.audio.pcm import Audio
from tts_actor.config import Settings

BUILTIN_HZ = 150.0


@dataclass
class Conditionals:
    """chatterbox.tts.Conditionals: ``t3`` holds the speaker and the emotion, ``gen`` the decoder's reference."""

    t3: dict[str, float]
    gen: dict[str, Any]


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[1:])) + 1])


def listen(audio: Audio) -> float:
    """The pitch of what the adapter returned, from its PCM."""
    return dominant_hz(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate)


class StandInModel:
    """What ChatterboxTTS and ChatterboxMultilingualTTS share: state and conditionals as upstream keeps them."""

    sr = 24000
    loaded: ClassVar[list[tuple[str, Path, str]]] = []

    def __init__(self, ckpt_dir: Path, conds: Conditionals | None) -> None:
        self.ckpt_dir = ckpt_dir
        self.conds = conds
        self.calls: list[dict[str, Any]] = []
        self.prompts: list[Path] = []

    @classmethod
    def from_local(cls, ckpt_dir: Path, device: str) -> StandInModel:
        ckpt_dir = Path(ckpt_dir)
        StandInModel.loaded.append((cls.__name__, ckpt_dir, device))
        conds = None
        if (ckpt_dir / "conds.pt").exists():
            conds = Conditionals({"hz": float((ckpt_dir / "conds.pt").read_text()), "emotion": 0.5}, {})
        return cls(ckpt_dir, conds)

    @classmethod
    def from_pretrained(cls, device: str) -> StandInModel:
        raise AssertionError("from_pretrained retries the hub for ~23 s; the adapter must use from_local")

    def prepare_conditionals(self, wav_fpath: str, exaggeration: float = 0.5) -> None:
        self.prompts.append(Path(wav_fpath))
        with wave.open(wav_fpath, "rb") as wav:
            rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
        hz = dominant_hz(np.frombuffer(frames, dtype="<i2"), rate)
        self.conds = Conditionals({"hz": hz, "emotion": exaggeration}, {"prompt_seconds": len(frames) / 2 / rate})

    def _generate(self, text: str, audio_prompt_path: str | None, exaggeration: float, **record: Any) -> Any:
        import torch

        if audio_prompt_path:
            self.prepare_conditionals(audio_prompt_path, exaggeration=exaggeration)
        else:
            assert self.conds is not None, "Please `prepare_conditionals` first or specify `audio_prompt_path`"
        if exaggeration != self.conds.t3["emotion"]:  # upstream rebinds conds.t3 on the object it holds
            self.conds.t3 = {**self.conds.t3, "emotion": exaggeration}
        self.calls.append({"text": text, "exaggeration": exaggeration, "voice_hz": self.conds.t3["hz"], **record})
        seconds = 0.05 * len(text)
        t = torch.arange(int(self.sr * seconds)) / self.sr
        return (0.5 * torch.sin(2 * torch.pi * self.conds.t3["hz"] * t)).unsqueeze(0)


class ChatterboxTTS(StandInModel):
    def generate(
        self,
        text: str,
        repetition_penalty: float = 1.2,
        min_p: float = 0.05,
        top_p: float = 1.0,
        audio_prompt_path: str | None = None,
        exaggeration: float = 0.5,
        cfg_weight: float = 0.5,
        temperature: float = 0.8,
    ) -> Any:
        return self._generate(text, audio_prompt_path, exaggeration, cfg_weight=cfg_weight, temperature=temperature)


class ChatterboxMultilingualTTS(StandInModel):
    def __init__(self, ckpt_dir: Path, conds: Conditionals | None) -> None:
        super().__init__(ckpt_dir, conds)
        self.cangjie = MTLTokenizer(ckpt_dir)

    def generate(
        self,
        text: str,
        language_id: str,
        audio_prompt_path: str | None = None,
        exaggeration: float = 0.5,
        cfg_weight: float = 0.5,
        temperature: float = 0.8,
        repetition_penalty: float = 2.0,
        min_p: float = 0.05,
        top_p: float = 1.0,
    ) -> Any:
        return self._generate(
            text,
            audio_prompt_path,
            exaggeration,
            language_id=language_id,
            cfg_weight=cfg_weight,
            temperature=temperature,
        )


class MTLTokenizer:
    """chatterbox.models.tokenizers.tokenizer: the Cangjie table comes from ``hf_hub_download`` (errors only logged)."""

    def __init__(self, model_dir: Path) -> None:
        self.table: str | None = None
        module = sys.modules["chatterbox.models.tokenizers.tokenizer"]
        try:
            path = module.hf_hub_download(
                repo_id="ResembleAI/chatterbox", filename="Cangjie5_TC.json", cache_dir=model_dir
            )
            self.table = Path(path).read_text()
        except Exception:  # upstream logs a warning and goes on without the table
            self.table = None


HUB_CALLS: list[dict[str, Any]] = []


def hub_download(**kwargs: Any) -> str:
    HUB_CALLS.append(kwargs)
    raise OSError("stand-in hub: no network in this test")


@pytest.fixture
def stand_in_chatterbox(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    StandInModel.loaded = []
    HUB_CALLS.clear()
    for name in ("chatterbox", "chatterbox.models", "chatterbox.models.tokenizers"):
        install_stand_in(monkeypatch, name)
    install_stand_in(monkeypatch, "chatterbox.models.tokenizers.tokenizer", hf_hub_download=hub_download)
    install_stand_in(monkeypatch, "chatterbox.tts", ChatterboxTTS=ChatterboxTTS, Conditionals=Conditionals)
    install_stand_in(monkeypatch, "chatterbox.mtl_tts", ChatterboxMultilingualTTS=ChatterboxMultilingualTTS)


def checkpoint(directory: Path, multilingual: bool = False, builtin_hz: float | None = BUILTIN_HZ) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if builtin_hz is not None:
        (directory / "conds.pt").write_text(str(builtin_hz))
    if multilingual:
        (directory / "Cangjie5_TC.json").write_text('["日\\ta"]')
    return directory


@pytest.fixture
def findable_chatterbox(stand_in_chatterbox: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in, findable by the service's package probe (importlib.util.find_spec); torchaudio a stand-in too."""
    if "torchaudio" not in sys.modules:
        install_stand_in(monkeypatch, "torchaudio")
    for name in ("chatterbox", "torchaudio"):
        monkeypatch.setattr(sys.modules[name], "__spec__", importlib.machinery.ModuleSpec(name, None), raising=False)


def chatterbox_settings(settings: Settings, tmp_path: Path, instance: str, **more: Any) -> Settings:
    """An instance serving the stand-in Chatterbox alone (German and French), from a checkpoint in ``tmp_path``."""
    checkpoint(tmp_path / "ckpt" / "multilingual", multilingual=True)
    return settings.with_(
        instance=instance,
        backends=("chatterbox",),
        language_overrides={"chatterbox": ("de", "fr")},
        local_model_dirs={"chatterbox": tmp_path / "ckpt"},
        **more,
    )
