"""Which replies get the inaudible watermark (``TTS_WATERMARK``), decided once per process and per engine.

The mark itself is :mod:`tts_actor.audio.watermark`. Engines that mark their own output
(``BackendSpec.watermarks_itself``, Chatterbox) get no second one. Whether the extra is installed is read
once, when the pipeline is built: packages do not appear while the service runs.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable

from tts_actor.audio import watermark
from tts_actor.audio.pcm import Audio
from tts_actor.audio.perthnet import PACKAGE
from tts_actor.audio.watermark import WatermarkMode
from tts_actor.backends.base import BackendSpec
from tts_actor.errors import TtsError
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)


class Marking:
    """``TTS_WATERMARK`` and what is installed, as the answer for one engine's replies."""

    def __init__(self, mode: str, package: str = PACKAGE) -> None:
        """``package``: resemble-perth's import name (a test names one that is not installed)."""
        self.mode = WatermarkMode(mode)
        self.package = package
        self.missing = watermark.missing_packages(package) if self.mode is not WatermarkMode.OFF else []
        self.enabled = self.mode is WatermarkMode.ON or (self.mode is WatermarkMode.AUTO and not self.missing)

    def name_for(self, spec: BackendSpec) -> str | None:
        """The mark the service adds to this engine's audio (None: none); ``watermark_unavailable`` when required."""
        if spec.watermarks_itself or not self.enabled:
            return None
        if self.missing:
            raise watermark.unavailable(f"TTS_WATERMARK=on but {', '.join(self.missing)} not installed")
        return watermark.NAME

    @staticmethod
    def carried(spec: BackendSpec, added: str | None) -> str | None:
        """The mark the reply's audio carries: the service's, or the engine's own."""
        return added or (watermark.NAME if spec.watermarks_itself else None)

    def marker(self, added: str | None) -> Callable[[Audio], Awaitable[Audio]] | None:
        return functools.partial(watermark.mark_async, package=self.package) if added is not None else None

    async def prepare(self, specs: Iterable[BackendSpec]) -> None:
        """Load the model now, in a thread, when some engine here will need it: the first reply does not wait."""
        if not self.enabled or all(spec.watermarks_itself for spec in specs):
            return
        started = time.perf_counter()
        try:
            await asyncio.to_thread(watermark.model, self.package)
        except TtsError as error:
            log.warning("watermark_unavailable", mode=self.mode.value, message=error.message, fix=error.fix)
            return
        log.info("watermark_ready", mode=self.mode.value, load_ms=round((time.perf_counter() - started) * 1000))
