"""Boson AI Higgs Audio v2 (``boson-multimodal``): expressive generation with voice cloning; needs a CUDA GPU.

Two repositories come through the model manager, the 3B generation model and its
audio tokenizer; ``HiggsAudioServeEngine`` loads both from the local directories.
A request is a ChatML conversation: a system prompt describing the scene, then
(when cloning) the reference audio as an assistant turn, then the text.
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

DEFAULT_MODEL_REPO = "bosonai/higgs-audio-v2-generation-3B-base"
DEFAULT_TOKENIZER_REPO = "bosonai/higgs-audio-v2-tokenizer"
SYSTEM_PROMPT = (
    "Generate audio following instruction.\n\n"
    "<|scene_desc_start|>\nAudio is recorded from a quiet room.\n<|scene_desc_end|>"
)
# the reference turn's transcript is unknown (the request carries audio only); a neutral stand-in
REFERENCE_TRANSCRIPT = "Please listen to this voice."
MAX_NEW_TOKENS = 2048
DEFAULT_TEMPERATURE = 0.3

SPEC = BackendSpec(
    name="higgs",
    extra="higgs",
    packages=("boson_multimodal", "torch", "torchaudio"),
    languages=("en", "zh", "de", "fr", "es", "ja", "ko"),
    sample_rate=24000,
    device=Device.CUDA_REQUIRED,
    approx_memory_mb=24000,
    description="Boson AI Higgs Audio v2: expressive generation with voice cloning (CUDA GPU, about 24 GB).",
    supports_cloning=True,
    # a few sentences per call keep generation well under its token budget
    max_segment_chars=400,
)


class HiggsAudioBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages() if settings.language_overrides.get("higgs") else ("en", "zh")
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    def voices(self) -> list[Voice]:
        return [
            Voice(f"higgs-default-{lang}", lang, self.name, "voice chosen by the model; send reference_audio to clone")
            for lang in self._languages
        ]

    def models(self) -> tuple[ModelRef, ...]:
        if self.local_model_dir is not None:
            return ()
        return (
            ModelRef(self.settings.repo_overrides.get("higgs", DEFAULT_MODEL_REPO), key="model"),
            ModelRef(DEFAULT_TOKENIZER_REPO, key="tokenizer"),
        )

    def load(self, model_dirs: dict[str, Path]) -> None:
        device = pick_device(self.spec)  # fails with a fix before touching the package when there is no GPU
        from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine

        engine = HiggsAudioServeEngine(
            str(self.model_dir(model_dirs, "model")), str(self.model_dir(model_dirs, "tokenizer")), device=device
        )
        with self._lock:
            self._engine = engine

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        from boson_multimodal.data_types import AudioContent, ChatMLSample, Message

        with self._lock:
            engine = self._engine
        if engine is None:
            raise self.not_loaded()
        options = request.options
        with reference_wav_file(request.reference_audio) as reference:
            messages = [Message(role="system", content=SYSTEM_PROMPT)]
            if reference is not None:
                messages += [
                    Message(role="user", content=REFERENCE_TRANSCRIPT),
                    Message(role="assistant", content=AudioContent(audio_url=str(reference))),
                ]
            messages.append(Message(role="user", content=request.text))
            with seeded(options.seed):
                output = engine.generate(
                    chat_ml_sample=ChatMLSample(messages=messages),
                    max_new_tokens=MAX_NEW_TOKENS,
                    temperature=DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
                    stop_strings=["<|end_of_text|>", "<|eot_id|>"],
                )
        return Audio(float_to_pcm16(to_numpy(output.audio)), int(output.sampling_rate))

    def unload(self) -> None:
        with self._lock:
            self._engine = None
        release_memory()
