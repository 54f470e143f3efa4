"""Shared by the cloned-voice tests: Chatterbox settings on the stand-in, a gated adapter, a look into its LRU.

Chatterbox is the stand-in package of tests/support/stand_in_chatterbox.py (its weights cannot run here);
:class:`GatedChatterbox` is the real adapter, whose worker a test holds between segments.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.support.stand_in_chatterbox import checkpoint
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.config import Settings
from tts_actor.wire.messages import SynthesisRequest


def chatterbox_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    checkpoint(tmp_path / "ckpt" / "multilingual", multilingual=True)
    return settings.with_(
        **{"instance": "solo", **changes},
        backends=("chatterbox",),
        language_overrides={"chatterbox": ("de",)},
        local_model_dirs={"chatterbox": tmp_path / "ckpt"},
    )


def holds(adapter: ChatterboxBackend, digest: str) -> bool:
    return any(key[-1] == digest for key in list(adapter._profiles._entries))


class GatedChatterbox(ChatterboxBackend):
    """The real adapter; from its second segment on, each waits for ``gate`` (the first tells ``started``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.segments = 0

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.segments += 1
        if self.segments > 1:
            self.started.set()
            if not self.gate.wait(30):
                raise TimeoutError("test gate never opened")
        return super().synthesize(request, voice)
