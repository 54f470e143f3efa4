"""Resemble AI Chatterbox: expressive TTS with zero-shot voice cloning, English and 23-language models.

Weights come through the model manager's bounded download (``models()``), then
load from local files with ``from_local``: ``from_pretrained`` is never called,
because it retries the hub for many seconds when it is unreachable. English uses
``ChatterboxTTS``; any other configured language (``TTS_CHATTERBOX_LANGUAGES``)
adds ``ChatterboxMultilingualTTS`` from the same repository.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tts_actor.audio import Audio, float_to_pcm16
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.backends.reference_audio import reference_wav_file
from tts_actor.backends.torch_support import pick_device, release_memory, seeded, to_numpy
from tts_actor.messages import SynthesisRequest

DEFAULT_REPO = "ResembleAI/chatterbox"
ENGLISH_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
MULTILINGUAL_FILES = (
    "ve.pt",
    "t3_mtl23ls_v2.safetensors",
    "s3gen.pt",
    "grapheme_mtl_merged_expanded_v1.json",
    "conds.pt",
    "Cangjie5_TC.json",
)
MULTILINGUAL_LANGUAGES = (
    "ar", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "it", "ja",
    "ko", "ms", "nl", "no", "pl", "pt", "ru", "sv", "sw", "tr", "zh",
)  # fmt: skip
# the engine's own defaults, used when a request leaves an option out
DEFAULT_EXAGGERATION = 0.5
DEFAULT_CFG_WEIGHT = 0.5
DEFAULT_TEMPERATURE = 0.8

SPEC = BackendSpec(
    name="chatterbox",
    extra="chatterbox",
    packages=("chatterbox", "torch", "torchaudio"),
    languages=MULTILINGUAL_LANGUAGES,
    sample_rate=24000,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=8000,
    description="Resemble AI Chatterbox: expressive TTS with zero-shot voice cloning (English, or 23 languages).",
    supports_cloning=True,
    extra_fix="chatterbox-tts pins its own torch; give it its own virtualenv if another extra needs a different one",
    # its output stops at ~40 s (1000 speech tokens); it fails on texts under ~10 characters
    max_segment_chars=300,
    min_segment_chars=10,
)


class ChatterboxBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages() if settings.language_overrides.get("chatterbox") else ("en",)
        self._english: Any = None
        self._multilingual: Any = None
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    @property
    def wants_multilingual(self) -> bool:
        return any(lang != "en" for lang in self._languages)

    def voices(self) -> list[Voice]:
        return [
            Voice(f"chatterbox-default-{lang}", lang, self.name, "built-in voice; send reference_audio to clone one")
            for lang in self._languages
        ]

    def models(self) -> tuple[ModelRef, ...]:
        if self.local_model_dir is not None:
            return ()
        repo = self.settings.repo_overrides.get("chatterbox", DEFAULT_REPO)
        refs = []
        if "en" in self._languages:
            refs.append(ModelRef(repo, allow_patterns=ENGLISH_FILES, key="english"))
        if self.wants_multilingual:
            refs.append(ModelRef(repo, allow_patterns=MULTILINGUAL_FILES, key="multilingual"))
        return tuple(refs)

    def load(self, model_dirs: dict[str, Path]) -> None:
        device = pick_device(self.spec)
        english = multilingual = None
        if "en" in self._languages:
            from chatterbox.tts import ChatterboxTTS

            english = ChatterboxTTS.from_local(self.model_dir(model_dirs, "english"), device)
        if self.wants_multilingual:
            from chatterbox.mtl_tts import ChatterboxMultilingualTTS

            multilingual = ChatterboxMultilingualTTS.from_local(self.model_dir(model_dirs, "multilingual"), device)
        with self._lock:
            self._english, self._multilingual = english, multilingual

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        import torch

        with self._lock:
            english, multilingual = self._english, self._multilingual
        options = request.options
        kwargs: dict[str, Any] = {
            "exaggeration": DEFAULT_EXAGGERATION if options.exaggeration is None else options.exaggeration,
            "cfg_weight": DEFAULT_CFG_WEIGHT if options.cfg_weight is None else options.cfg_weight,
            "temperature": DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
        }
        if voice.language == "en" and english is not None:
            model = english
        else:
            model = multilingual
            kwargs["language_id"] = voice.language
        if model is None:
            raise self.not_loaded()
        with reference_wav_file(request.reference_audio) as reference:
            if reference is not None:
                kwargs["audio_prompt_path"] = str(reference)
            with torch.inference_mode(), seeded(options.seed):
                wav = model.generate(request.text, **kwargs)
        return Audio(float_to_pcm16(to_numpy(wav)), int(model.sr))

    def unload(self) -> None:
        with self._lock:
            self._english = self._multilingual = None
        release_memory()
