"""Coqui XTTS v2 (``coqui-tts``, module ``TTS``): 17 languages, voice cloning from a few seconds of audio.

The checkpoint comes through the model manager (``coqui/XTTS-v2``) and loads with
``Xtts(config)`` and ``load_checkpoint``. coqui-tts 0.28 re-saves an old-format
``model.pth`` in place on first load, which would rewrite a file of the
content-addressed cache (or fail on a read-only one): during the load that
``torch.save`` is a no-op, so the fetched file stays byte for byte as fetched.
The weights are under the Coqui Public Model License (non-commercial): the backend
loads only once the operator accepts it (``TTS_ACCEPT_LICENSES=cpml``).

Without reference audio the built-in voice speaks: the
conditioning latents of the repository's ``samples/<lang>_sample.wav`` (the English
one, or any, when that language has none), else the first speaker in
``speakers_xtts.pth``. They are computed once, at load.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
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
from tts_actor.observability.logs import get_logger
from tts_actor.wire.messages import SynthesisRequest

DEFAULT_REPO = "coqui/XTTS-v2"
SAMPLE_RATE = 24000
DEFAULT_TEMPERATURE = 0.75
# the GPT asserts on longer input (``gpt_max_text_tokens``, 402 in the released config); a segment must stay under it
MAX_TEXT_TOKENS = 400
MODEL_MODULE = "TTS.tts.models.xtts"
log = get_logger(__name__)
# ISO 639-1 on the wire -> XTTS's own language codes
XTTS_LANGUAGE = {
    "en": "en", "es": "es", "fr": "fr", "de": "de", "it": "it", "pt": "pt", "pl": "pl", "tr": "tr", "ru": "ru",
    "nl": "nl", "cs": "cs", "ar": "ar", "zh": "zh-cn", "ja": "ja", "hu": "hu", "ko": "ko", "hi": "hi",
}  # fmt: skip

UPSTREAM = (
    Upstream("coqui-tts", "TTS.tts.configs.xtts_config", "XttsConfig", Kind.CLASS),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts", kwargs=("config",)),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts.load_checkpoint", kwargs=("config", "checkpoint_dir", "use_deepspeed")),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts.get_conditioning_latents", kwargs=("audio_path",)),
    Upstream(
        "coqui-tts",
        MODEL_MODULE,
        "Xtts.inference",
        kwargs=("text", "language", "gpt_cond_latent", "speaker_embedding", "temperature", "speed"),
    ),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts.tokenizer", Kind.ATTRIBUTE),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts.args", Kind.ATTRIBUTE),  # set by BaseTTS
    Upstream("coqui-tts", "TTS.tts.layers.xtts.tokenizer", "VoiceBpeTokenizer.encode", kwargs=("txt", "lang")),
    # what keeps 0.28 from rewriting model.pth: its torch.save goes through this module global
    Upstream("coqui-tts", MODEL_MODULE, "torch", Kind.GLOBAL),
    Upstream("coqui-tts", MODEL_MODULE, "Xtts._load_checkpoint", kwargs=("model_path",), optional=True),
)

SPEC = BackendSpec(
    name="xtts",
    extra="xtts",
    packages=("TTS", "torch", "torchaudio"),
    languages=tuple(XTTS_LANGUAGE),
    sample_rate=SAMPLE_RATE,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=6000,
    description="Coqui XTTS v2: multilingual TTS with voice cloning.",
    supports_cloning=True,
    license=License("cpml", "Coqui Public Model License 1.0.0 (non-commercial)", "https://coqui.ai/cpml", True),
    # XTTS v2 warns past 250 characters (English) and asserts past 400 tokens
    max_segment_chars=240,
)


@dataclass(frozen=True)
class Conditioning:
    """What XTTS speaks with: a voice as GPT latents plus a speaker embedding."""

    gpt_cond_latent: Any
    speaker_embedding: Any


def default_speaker_source(checkpoint_dir: Path, language: str = "en") -> Path | None:
    """The ``language`` sample WAV, else the English or any sample, else ``speakers_xtts.pth``, else None."""
    samples = checkpoint_dir / "samples"
    for preferred in (samples / f"{language}_sample.wav", samples / "en_sample.wav"):
        if preferred.is_file():
            return preferred
    others = sorted(samples.glob("*.wav")) if samples.is_dir() else []
    if others:
        return others[0]
    speakers = checkpoint_dir / "speakers_xtts.pth"
    return speakers if speakers.is_file() else None


class XttsBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages()
        self._model: Any = None
        self._default: dict[str, Conditioning] = {}
        self._profiles: ConditioningCache[Conditioning] = ConditioningCache()  # (backend, profile digest) -> latents
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    def voices(self) -> list[Voice]:
        return [
            Voice(f"xtts-default-{lang}", lang, self.name, "repository sample voice; send reference_audio to clone")
            for lang in self._languages
        ]

    def models(self) -> tuple[ModelRef, ...]:
        if self.local_model_dir is not None:
            return ()
        return (ModelRef(self.settings.repo_overrides.get("xtts", DEFAULT_REPO)),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        checkpoint_dir = self.model_dir(model_dirs)
        if not (checkpoint_dir / "config.json").is_file():
            raise BackendFailure(
                Reason.CORRUPT_MODEL,
                f"xtts: no config.json in {checkpoint_dir}",
                "Fetch it again (`tts-actor fetch xtts`) or fix TTS_XTTS_MODEL_DIR, then `tts-actor retry xtts`.",
            )
        config = XttsConfig()
        config.load_json(str(checkpoint_dir / "config.json"))
        model = Xtts(config)
        module = sys.modules[MODEL_MODULE]
        with swapped_global(module, "torch", _TorchThatKeepsFiles(module.torch)):
            model.load_checkpoint(config, checkpoint_dir=str(checkpoint_dir), use_deepspeed=False)
        model.to(pick_device(self.spec))
        model.eval()
        by_source: dict[Path | None, Conditioning] = {}
        defaults: dict[str, Conditioning] = {}
        for lang in self._languages:
            source = default_speaker_source(checkpoint_dir, lang)
            if source not in by_source:
                by_source[source] = self._conditioning_from(model, checkpoint_dir, source)
            defaults[lang] = by_source[source]
        with self._lock:
            self._model, self._default = model, defaults

    @staticmethod
    def _conditioning_from(model: Any, checkpoint_dir: Path, source: Path | None) -> Conditioning:
        if source is None:
            raise BackendFailure(
                Reason.CORRUPT_MODEL,
                f"xtts: {checkpoint_dir} has neither samples/*.wav nor speakers_xtts.pth for a default voice",
                "Fetch the whole coqui/XTTS-v2 repository (`tts-actor fetch xtts`), or always send reference_audio.",
            )
        if source.suffix == ".wav":
            latent, embedding = model.get_conditioning_latents(audio_path=[str(source)])
            return Conditioning(latent, embedding)
        import torch

        speakers = torch.load(source, map_location="cpu", weights_only=True)
        first = speakers[next(iter(speakers))]
        device = next(model.parameters()).device
        return Conditioning(first["gpt_cond_latent"].to(device), first["speaker_embedding"].to(device))

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        import torch

        with self._lock:
            model, conditioning = self._model, self._default.get(voice.language)
        if model is None or conditioning is None:
            raise self.not_loaded()
        options = request.options
        self._check_length(model, request.text, voice.language)
        if request.reference_audio is not None and request.reference_digest is not None:
            # a stored profile: the latents are the same for every language, computed once
            conditioning, hit = self._profiles.get_or_compute(
                (self.name, request.reference_digest), lambda: self._latents(model, request.reference_audio)
            )
            trace.get_current_span().set_attribute("tts.conditioning_cache", "hit" if hit else "miss")
        elif request.reference_audio is not None:
            conditioning = self._latents(model, request.reference_audio)
        with torch.inference_mode(), seeded(options.seed):
            out = model.inference(
                request.text,
                XTTS_LANGUAGE[voice.language],
                conditioning.gpt_cond_latent,
                conditioning.speaker_embedding,
                temperature=DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
                speed=options.speed or 1.0,
            )
        return Audio(float_to_pcm16(to_numpy(out["wav"])), SAMPLE_RATE)

    @staticmethod
    def _latents(model: Any, clip: bytes | None) -> Conditioning:
        """Upstream's analysis of a clip: GPT conditioning latents and the speaker embedding."""
        with reference_wav_file(clip) as reference:
            latent, embedding = model.get_conditioning_latents(audio_path=[str(reference)])
        return Conditioning(latent, embedding)

    def _check_length(self, model: Any, text: str, language: str) -> None:
        """Refuse, with a fix, what the GPT would assert on (its text-token limit)."""
        limit = min(MAX_TEXT_TOKENS, int(getattr(model.args, "gpt_max_text_tokens", MAX_TEXT_TOKENS)))
        tokens = len(model.tokenizer.encode(text.strip().lower(), lang=XTTS_LANGUAGE[language].split("-")[0]))
        if tokens >= limit:
            raise TtsError(
                ErrorCode.TEXT_TOO_LONG,
                f"xtts: the text is {tokens} tokens; the model takes fewer than {limit} at once",
                "Send shorter text (a few sentences at a time).",
                backend=self.name,
                detail={"tokens": tokens, "limit": limit},
            )

    def forget_reference(self, digest: str) -> int:
        return self._profiles.discard_reference(digest)

    def unload(self) -> None:
        with self._lock:
            self._model, self._default = None, {}
        self._profiles.clear()  # latents belong to the model that made them
        release_memory()


class _TorchThatKeepsFiles:
    """``torch`` as the XTTS model module sees it during the load, with ``save`` turned into a no-op."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def save(self, obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        log.info("xtts_checkpoint_kept", path=str(f), why="coqui-tts converts an old checkpoint in memory only")
