"""Meta MMS-TTS (VITS) per language, via transformers.

Adapter placeholder: declarations and the package probe are real; load comes later.
"""

from __future__ import annotations

from pathlib import Path

from tts_actor.audio import Audio
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, ModelRef, Voice
from tts_actor.messages import SynthesisRequest

SPEC = BackendSpec(
    name="mms",
    extra="mms",
    packages=("torch", "transformers"),
    languages=("en", "de", "fr", "es"),
    sample_rate=16000,
    device=Device.CPU,
    approx_memory_mb=300,
    description="Meta MMS-TTS (VITS) per language, via transformers.",
    supports_cloning=False,
)


class MmsBackend(BackendAdapter):
    spec = SPEC

    def voices(self) -> list[Voice]:
        return [Voice(f"mms-default-{lang}", lang, self.name) for lang in self.spec.languages]

    def models(self) -> tuple[ModelRef, ...]:
        return (ModelRef(self.settings.repo_overrides.get("mms", "facebook/mms-tts-eng")),)

    def load(self, model_dirs: dict[str, Path]) -> None:
        raise NotImplementedError("mms adapter: load")

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        raise NotImplementedError("mms adapter: synthesize")

    def unload(self) -> None:
        pass
