"""The fleet's audio cache: a JetStream Object Store bucket with a TTL and a size cap.

The key is a digest of everything that changes the audio, so two requests that would
sound the same share one entry whichever instance made it. The cache is an optimisation
only: every failure (no JetStream, a lost bucket, a full bucket, a slow server) is a miss
or a dropped put with a log line, never an error for the caller. A lost bucket is made
again on the next put.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectMeta, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from tts_actor.config import Settings
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
KEY_VERSION = 1  # bump when the audio a key stands for changes meaning
_SPACE = re.compile(r"\s+")
REOPEN_AFTER_S = 5.0  # after a failure to open the bucket, calls are misses for this long, not round trips


def normalize_text(text: str) -> str:
    """The text as the engines hear it: NFC, runs of white space as one space, no edges."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def audio_cache_key(
    *,
    text: str,
    language: str,
    backend: str,
    voice: str,
    audio_format: str,
    options: Mapping[str, Any] | None = None,
    sample_rate: int | None = None,
    bitrate: int | None = None,
    model_revision: str | None = None,
    word_timings: bool = False,
) -> str:
    """A hex digest of everything that changes the audio.

    ``voice`` is the voice id, or for a cloned voice the digest of its reference audio (a
    profile's ``digest``): never the profile id, so that two profiles of one clip share entries
    and a deleted profile's id reveals nothing. ``options`` with a None value count as absent.
    ``word_timings``: an entry that keeps each word's time has a key of its own (the same audio, more metadata),
    so a reply without them never stands in for one with them; the keys of other entries are unchanged.
    """
    parts = {
        "v": KEY_VERSION,
        "text": normalize_text(text),
        "language": language.lower(),
        "backend": backend,
        "voice": voice,
        "format": audio_format,
        "options": {k: v for k, v in sorted((options or {}).items()) if v is not None},
        "sample_rate": sample_rate,
        "bitrate": bitrate,
        "model_revision": model_revision,
    }
    if word_timings:
        parts["timings"] = "word"
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class CachedAudio:
    """The encoded audio and the reply headers that describe it (content type, sample rate, duration...)."""

    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


class AudioCache:
    """``get``/``put`` by :func:`audio_cache_key`; see the module docstring for the failure rules."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.bucket = settings.audio_cache_bucket
        self.ttl_s = settings.audio_cache_ttl_s
        self.max_bytes = settings.audio_cache_max_bytes
        self.replicas = settings.js_replicas
        self.timeout_s = timeout_s
        self._store: ObjectStore | None = None
        self._open_failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def _open(self, create: bool) -> ObjectStore | None:
        if self._store is not None:
            return self._store
        if self._open_failed_at is not None and time.monotonic() - self._open_failed_at < REOPEN_AFTER_S:
            return None
        async with self._lock:
            if self._store is not None:
                return self._store
            js = self.nc.jetstream(timeout=self.timeout_s)
            try:
                try:
                    self._store = await js.object_store(self.bucket)
                except BucketNotFoundError:
                    if not create:
                        return None  # nothing cached yet: a miss, and the put that follows makes it
                    self._store = await js.create_object_store(
                        self.bucket,
                        description="tts-actor audio cache",
                        ttl=self.ttl_s,
                        max_bytes=self.max_bytes,
                        replicas=self.replicas,
                        storage=StorageType.FILE,
                    )
                    log.info("audio_cache_created", bucket=self.bucket, ttl_s=self.ttl_s, max_bytes=self.max_bytes)
            except Exception as exc:
                self._open_failed_at = time.monotonic()
                log.warning("audio_cache_unavailable", bucket=self.bucket, error=repr(exc), note="synthesizing instead")
                return None
            self._open_failed_at = None
            return self._store

    async def get(self, key: str) -> CachedAudio | None:
        """The cached audio, or None (a miss, or the cache unavailable)."""
        store = await self._open(create=False)
        if store is None:
            return None
        try:
            # bounded: chunks that aged out a moment before their meta would leave the read waiting
            result = await asyncio.wait_for(store.get(key), self.timeout_s)
        except (ObjectNotFoundError, NotFoundError):
            return None
        except Exception as exc:  # lost bucket, timeout, digest mismatch: a miss, and look again next time
            self._store = None
            log.warning("audio_cache_get_failed", key=key[:16], error=repr(exc))
            return None
        info = result.info
        try:
            headers = json.loads(info.description) if info.description else {}
        except ValueError:
            headers = {}
        return CachedAudio(result.data, {str(k): str(v) for k, v in headers.items()})

    async def put(self, key: str, data: bytes, headers: Mapping[str, str] | None = None) -> bool:
        """Store the audio; False (logged) when the cache cannot take it now: full, lost, unreachable."""
        for attempt in (1, 2):
            store = await self._open(create=True)
            if store is None:
                return False
            meta = ObjectMeta(name=key, description=json.dumps(dict(headers or {})))
            try:
                await asyncio.wait_for(store.put(key, data, meta=meta), self.timeout_s * 4)
                return True
            except Exception as exc:  # a full bucket refuses (discard new); a lost one is made again
                self._store = None
                log.warning("audio_cache_put_failed", key=key[:16], bytes=len(data), error=repr(exc), attempt=attempt)
                if isinstance(exc, TimeoutError):  # the server is slow or away: do not wait twice
                    return False
        return False
