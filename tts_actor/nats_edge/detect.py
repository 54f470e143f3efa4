"""``tts.detect``: does an audio file carry the inaudible PerthNet watermark?

The request's body is the file itself (any format FFmpeg reads: WAV, FLAC, MP3, AAC, Opus, ...), at most
``TTS_MAX_REQUEST_BYTES``; the reply is JSON ``{"watermarked": bool, "confidence": 0..1, "seconds": float}``.
Decoding and scoring run on the watermark's detection thread (one core, one file at a time), so that detections
cannot take the cores from synthesis; beyond :data:`MAX_QUEUED` files in line the answer is ``busy``. A host
without the ``[watermark]`` extra answers ``watermark_unavailable`` with the fix.
"""

from __future__ import annotations

import json
import time

from nats.micro.request import Request

from tts_actor.audio import watermark
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.respond import respond_error
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
MAX_QUEUED = 8  # files scored or waiting on this instance; more is `busy` (a few seconds of speech take ~50 ms)
RETRY_AFTER_MS = 1000


class DetectEndpoint:
    """Scores files for the watermark, a bounded number at a time."""

    def __init__(self, settings: Settings, max_payload: int) -> None:
        self.settings = settings
        self.max_payload = max_payload
        self.queued = 0

    async def handle(self, req: Request) -> None:
        started = time.perf_counter()
        try:
            detection = await self._detect(req.data)
        except TtsError as error:
            log.info("detect_refused", code=error.code.value, message=error.message)
            await respond_error(req, error, self.max_payload)
            return
        except Exception as exc:  # never leave a caller without an answer
            log.exception("detect_failed")
            error = TtsError(ErrorCode.INTERNAL, f"detection failed: {type(exc).__name__}", "See the service log.")
            await respond_error(req, error, self.max_payload)
            return
        body = detection.to_dict()
        log.info("detected", bytes=len(req.data), ms=round((time.perf_counter() - started) * 1000), **body)
        await req.respond(json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    async def _detect(self, data: bytes) -> watermark.Detection:
        limit = self.settings.max_request_bytes
        if not data:
            raise TtsError(ErrorCode.INVALID_REQUEST, "tts.detect got no file", "Send the audio file as the body.")
        if len(data) > limit:
            raise TtsError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the file is {len(data)} bytes; tts.detect takes at most {limit} (TTS_MAX_REQUEST_BYTES)",
                "Send a shorter excerpt: a few seconds of speech are enough to detect the mark.",
            )
        if self.queued >= MAX_QUEUED:
            raise TtsError(
                ErrorCode.BUSY,
                f"{self.queued} files are being checked for the watermark here",
                "Send it again in a moment.",
                retry_after_ms=RETRY_AFTER_MS,
            )
        self.queued += 1
        try:
            return await watermark.detect_file_async(data)
        finally:
            self.queued -= 1
