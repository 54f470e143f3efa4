"""Resemble AI Chatterbox: expressive TTS with zero-shot voice cloning, English and 23-language models.

Weights come through the model manager's bounded download (``models()``), then
load from local files with ``from_local``: ``from_pretrained`` is never called,
because it retries the hub for many seconds when it is unreachable. English uses
``ChatterboxTTS``; any other configured language (``TTS_CHATTERBOX_LANGUAGES``)
adds ``ChatterboxMultilingualTTS`` from the same repository.

``generate(audio_prompt_path=...)`` replaces the model's conditionals (the voice)
for good, so every call starts from a copy of the built-in ones (``conds.pt``) and
puts them back afterwards: one caller's cloned voice never reaches the next caller.
The multilingual tokenizer fetches ``Cangjie5_TC.json`` from the hub at load even
with ``from_local``; the model manager fetches it with the rest, and the load
resolves it from those files.
"""

from __future__ import annotations

import copy
import sys
import threading
from pathlib import Path
from typing import Any

from opentelemetry import trace

from statemachine import Reason
from tts_actor.audio.pcm import Audio, float_to_pcm16
from tts_actor.backends.base import BackendAdapter, BackendFailure, BackendSpec, Device, License, ModelRef, Voice
from tts_actor.backends.conditioning_cache import ConditioningCache
from tts_actor.backends.reference_audio import reference_wav_file
from tts_actor.backends.torch_support import pick_device, release_memory, seeded, to_numpy
from tts_actor.backends.upstream import Kind, Upstream, swapped_global
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest

DEFAULT_REPO = "ResembleAI/chatterbox"
ENGLISH_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
CANGJIE_FILE = "Cangjie5_TC.json"  # the multilingual tokenizer's Chinese table
MULTILINGUAL_FILES = (
    "ve.pt",
    "t3_mtl23ls_v2.safetensors",
    "s3gen.pt",
    "grapheme_mtl_merged_expanded_v1.json",
    "conds.pt",
    CANGJIE_FILE,
)
TOKENIZER_MODULE = "chatterbox.models.tokenizers.tokenizer"
MULTILINGUAL_LANGUAGES = (
    "ar", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "it", "ja",
    "ko", "ms", "nl", "no", "pl", "pt", "ru", "sv", "sw", "tr", "zh",
)  # fmt: skip
# the engine's own defaults, used when a request leaves an option out
DEFAULT_EXAGGERATION = 0.5
DEFAULT_CFG_WEIGHT = 0.5
DEFAULT_TEMPERATURE = 0.8
# the speaker of conds.pt, the built-in voice
BUILTIN_VOICE_LANGUAGE = "en"

_GENERATE_OPTIONS = ("audio_prompt_path", "exaggeration", "cfg_weight", "temperature")
UPSTREAM = (
    Upstream("chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.from_local", kwargs=("ckpt_dir", "device")),
    Upstream("chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.generate", kwargs=("text", *_GENERATE_OPTIONS)),
    Upstream("chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.conds", Kind.ATTRIBUTE),
    Upstream(
        "chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.prepare_conditionals", kwargs=("wav_fpath", "exaggeration")
    ),
    Upstream("chatterbox-tts", "chatterbox.tts", "ChatterboxTTS.sr", Kind.ATTRIBUTE),
    Upstream("chatterbox-tts", "chatterbox.tts", "Conditionals", Kind.CLASS),
    Upstream(
        "chatterbox-tts", "chatterbox.mtl_tts", "ChatterboxMultilingualTTS.from_local", kwargs=("ckpt_dir", "device")
    ),
    Upstream(
        "chatterbox-tts",
        "chatterbox.mtl_tts",
        "ChatterboxMultilingualTTS.generate",
        kwargs=("text", "language_id", *_GENERATE_OPTIONS),
    ),
    Upstream("chatterbox-tts", "chatterbox.mtl_tts", "ChatterboxMultilingualTTS.conds", Kind.ATTRIBUTE),
    Upstream(
        "chatterbox-tts",
        "chatterbox.mtl_tts",
        "ChatterboxMultilingualTTS.prepare_conditionals",
        kwargs=("wav_fpath", "exaggeration"),
    ),
    Upstream("chatterbox-tts", "chatterbox.mtl_tts", "ChatterboxMultilingualTTS.sr", Kind.ATTRIBUTE),
    # the hub call that the load redirects to the fetched files
    Upstream("chatterbox-tts", TOKENIZER_MODULE, "hf_hub_download", Kind.GLOBAL),
    Upstream("chatterbox-tts", TOKENIZER_MODULE, "ChineseCangjieConverter._load_cangjie_mapping"),
)

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
    extra_fix="chatterbox-tts pins torch 2.6, transformers 5.2 and numpy<2: give it its own virtualenv",
    license=License("mit", "MIT License", "https://github.com/resemble-ai/chatterbox/blob/master/LICENSE"),
    # its output stops at ~40 s (1000 speech tokens); it fails on texts under ~10 characters
    max_segment_chars=300,
    min_segment_chars=10,
    # generate() ends with perth.PerthImplicitWatermarker().apply_watermark (English and multilingual alike)
    watermarks_itself=True,
)


class ChatterboxBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages() if settings.language_overrides.get("chatterbox") else ("en",)
        self._english: Any = None
        self._multilingual: Any = None
        self._builtin: dict[int, Any] = {}  # id(model) -> its conds.pt conditionals (None without the file)
        # (backend, model, profile digest) -> the conditionals prepare_conditionals made from the profile's clip
        self._profiles: ConditioningCache[Any] = ConditioningCache()
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

            directory = self.model_dir(model_dirs, "multilingual")
            if not (directory / CANGJIE_FILE).is_file():
                raise BackendFailure(
                    Reason.CORRUPT_MODEL,
                    f"chatterbox: {CANGJIE_FILE} is missing from {directory}; the multilingual tokenizer needs it",
                    "Fetch it again (`tts-actor fetch chatterbox`) or add it to TTS_CHATTERBOX_MODEL_DIR, "
                    "then `tts-actor retry chatterbox`.",
                )
            with swapped_global(sys.modules[TOKENIZER_MODULE], "hf_hub_download", _local_files(directory)):
                multilingual = ChatterboxMultilingualTTS.from_local(directory, device)
        builtin = {id(m): m.conds for m in (english, multilingual) if m is not None}
        with self._lock:
            self._english, self._multilingual, self._builtin = english, multilingual, builtin

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:

        with self._lock:
            english, multilingual, builtin = self._english, self._multilingual, self._builtin
        options = request.options
        speaker_language = (request.reference_language or voice.language) if request.reference_audio else None
        kwargs: dict[str, Any] = {
            "exaggeration": DEFAULT_EXAGGERATION if options.exaggeration is None else options.exaggeration,
            "cfg_weight": self._cfg_weight(options.cfg_weight, speaker_language or BUILTIN_VOICE_LANGUAGE, voice),
            "temperature": DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
        }
        if voice.language == "en" and english is not None:
            model = english
        else:
            model = multilingual
            kwargs["language_id"] = voice.language
        if model is None:
            raise self.not_loaded()
        own_voice = builtin.get(id(model))
        if own_voice is None and request.reference_audio is None:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                "chatterbox: the model files have no built-in voice (conds.pt)",
                "Send reference_audio to clone a voice, or fetch the model again (`tts-actor fetch chatterbox`).",
                backend=self.name,
            )
        try:
            if request.reference_digest is not None and request.reference_audio is not None:
                # a stored profile: its conditionals are computed once per model and reused (the next language)
                key = (self.name, "english" if model is english else "multilingual", request.reference_digest)
                conds, hit = self._profiles.get_or_compute(
                    key, lambda: self._prepare(model, request.reference_audio, kwargs["exaggeration"])
                )
                trace.get_current_span().set_attribute("tts.conditioning_cache", "hit" if hit else "miss")
                wav = self._generate(model, copy.copy(conds), request, kwargs)
            else:
                with reference_wav_file(request.reference_audio) as reference:
                    if reference is not None:
                        kwargs["audio_prompt_path"] = str(reference)
                    # a copy: generate() swaps the exaggeration into the conditionals it is given
                    wav = self._generate(model, copy.copy(own_voice), request, kwargs)
        finally:
            model.conds = copy.copy(own_voice)  # the cloned voice goes with this call
        return Audio(float_to_pcm16(to_numpy(wav)), int(model.sr))

    @staticmethod
    def _generate(model: Any, conds: Any, request: SynthesisRequest, kwargs: dict[str, Any]) -> Any:
        import torch

        model.conds = conds
        with torch.inference_mode(), seeded(request.options.seed):
            return model.generate(request.text, **kwargs)

    @staticmethod
    def _prepare(model: Any, clip: bytes, exaggeration: float) -> Any:
        """Upstream's analysis of a clip (speaker embedding, prompt tokens, decoder reference): the costly part."""
        import torch

        with reference_wav_file(clip) as reference, torch.inference_mode():
            model.prepare_conditionals(str(reference), exaggeration=exaggeration)
        return model.conds

    @staticmethod
    def _cfg_weight(requested: float | None, speaker_language: str, voice: Voice) -> float:
        """The caller's value; else 0 when the speaker's language differs from the text's (no accent transfer)."""
        if requested is not None:
            return requested
        return 0.0 if speaker_language != voice.language else DEFAULT_CFG_WEIGHT

    def forget_reference(self, digest: str) -> int:
        return self._profiles.discard_reference(digest)

    def unload(self) -> None:
        with self._lock:
            self._english = self._multilingual = None
            self._builtin = {}
        self._profiles.clear()  # conditionals belong to the model that made them
        release_memory()


def _local_files(directory: Path) -> Any:
    """Stands in for ``hf_hub_download`` during the load: the file from ``directory``, never the network."""

    def resolve(repo_id: str, filename: str, **_: Any) -> str:
        path = directory / filename
        if not path.is_file():
            raise FileNotFoundError(f"{filename} is not among the fetched files in {directory}")
        return str(path)

    return resolve
