"""Boson AI Higgs Audio v2: expressive generation with voice cloning.

Adapter placeholder: declarations and the package probe are real; load comes later.
"""

from __future__ import annotations

from pathlib import Path

from tts_actor.audio import Audio
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.messages import SynthesisRequest

SPEC = BackendSpec(
    name="higgs",
    extra="higgs",
    packages=("boson_multimodal", "torch", "torchaudio"),
    languages=("en", "zh"),
    sample_rate=24000,
    device=Device.CUDA_REQUIRED,
    approx_memory_mb=24000,
    description="Boson AI Higgs Audio v2: expressive generation with voice cloning.",
    supports_cloning=True,
)


class HiggsAudioBackend(BackendAdapter):
    spec = SPEC

    def voices(self) -> list[Voice]:
        return [Voice(f"higgs-default-{lang}", lang, self.name) for lang in self.spec.languages]

    def models(self) -> tuple[ModelRef, ...]:
        return (ModelRef(self.settings.repo_overrides.get("higgs", "bosonai/higgs-audio-v2-generation-3B-base")),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        raise NotImplementedError("higgs adapter: load")

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        raise NotImplementedError("higgs adapter: synthesize")

    def unload(self) -> None:
        pass
