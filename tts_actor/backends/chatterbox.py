"""Resemble AI Chatterbox: expressive English TTS with zero-shot voice cloning.

Adapter placeholder: declarations and the package probe are real; load comes later.
"""

from __future__ import annotations

from pathlib import Path

from tts_actor.audio import Audio
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.messages import SynthesisRequest

SPEC = BackendSpec(
    name="chatterbox",
    extra="chatterbox",
    packages=("chatterbox", "torch", "torchaudio"),
    languages=("en",),
    sample_rate=24000,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=8000,
    description="Resemble AI Chatterbox: expressive English TTS with zero-shot voice cloning.",
    supports_cloning=True,
)


class ChatterboxBackend(BackendAdapter):
    spec = SPEC

    def voices(self) -> list[Voice]:
        return [Voice(f"chatterbox-default-{lang}", lang, self.name) for lang in self.spec.languages]

    def models(self) -> tuple[ModelRef, ...]:
        return (ModelRef(self.settings.repo_overrides.get("chatterbox", "ResembleAI/chatterbox")),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        raise NotImplementedError("chatterbox adapter: load")

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        raise NotImplementedError("chatterbox adapter: synthesize")

    def unload(self) -> None:
        pass
