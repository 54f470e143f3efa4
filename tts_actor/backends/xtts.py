"""Coqui XTTS v2: multilingual TTS with voice cloning.

Adapter placeholder: declarations and the package probe are real; load comes later.
"""

from __future__ import annotations

from pathlib import Path

from tts_actor.audio import Audio
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.messages import SynthesisRequest

SPEC = BackendSpec(
    name="xtts",
    extra="xtts",
    packages=("TTS", "torch"),
    languages=("en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh", "ja", "hu", "ko", "hi"),
    sample_rate=24000,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=6000,
    description="Coqui XTTS v2: multilingual TTS with voice cloning.",
    supports_cloning=True,
)


class XttsBackend(BackendAdapter):
    spec = SPEC

    def voices(self) -> list[Voice]:
        return [Voice(f"xtts-default-{lang}", lang, self.name) for lang in self.spec.languages]

    def models(self) -> tuple[ModelRef, ...]:
        return (ModelRef(self.settings.repo_overrides.get("xtts", "coqui/XTTS-v2")),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        raise NotImplementedError("xtts adapter: load")

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        raise NotImplementedError("xtts adapter: synthesize")

    def unload(self) -> None:
        pass
