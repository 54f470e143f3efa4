"""The fleet's audio cache: a JetStream Object Store bucket with a TTL and a size cap.

The key is a digest of everything that changes the audio, so two requests that would
sound the same share one entry whichever instance made it. The cache is an optimisation
only: every failure (no JetStream, a lost bucket, a full bucket, a slow server) is a miss
or a dropped put with a log line, never an error for the caller. A lost bucket is made
again on the next put.

Erasure is the exception to "optional": cloned audio is stored only once the index from its
reference clip's digest to the key is written (:mod:`tts_actor.synthesis.audio_refs`), and
:meth:`AudioCache.erase_reference` deletes every file made from a clip, leaving no trace in the
bucket. Whatever keeps cached audio in front of this bucket (an in-memory copy) registers with
:meth:`AudioCache.on_erase` and hears of each erasure, this instance's or another's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectMeta, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from tts_actor.config import Settings
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_refs import ReferenceIndex

log = get_logger(__name__)
KEY_VERSION = 2  # bump when the audio a key stands for changes meaning (2: files carry the synthetic mark)
_SPACE = re.compile(r"\s+")
REOPEN_AFTER_S = 5.0  # after a failure to open the bucket, calls are misses for this long, not round trips
REFERENCE_HEADER = "Tts-Reference-Digest"  # in a cloned file's object headers: which clip made it
# told (reference digest, cache keys) when a voice's audio is erased; must not block
GUARD_S = 60.0  # after an erasure, audio from that clip is refused for this long (syntheses that were running)
EraseListener = Callable[[str, tuple[str, ...]], None]


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
    marked: bool = True,
) -> str:
    """A hex digest of everything that changes the audio.

    ``voice`` is the voice id, or for a cloned voice the digest of its reference audio (a
    profile's ``digest``): never the profile id, so that two profiles of one clip share entries
    and a deleted profile's id reveals nothing. ``options`` with a None value count as absent.
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
        "marked": marked,  # TTS_MARK_SYNTHETIC: the file's metadata differs
    }
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
        self.index = ReferenceIndex(nc, settings, timeout_s)
        self._erase_listeners: list[EraseListener] = []
        self._guard: dict[str, float] = {}  # reference digest -> when it was erased (epoch s), for GUARD_S

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

    async def put(
        self, key: str, data: bytes, headers: Mapping[str, str] | None = None, reference: str | None = None
    ) -> bool:
        """Store the audio; False (logged) when the cache cannot take it now: full, lost, unreachable.

        ``reference``: the digest of the clip a cloned voice came from. Its index entry is written first,
        and when that fails the audio is not cached at all: an erasure must be able to find every file.
        """
        if reference is not None and self._guarded(reference):  # not a failed write: it must not be written
            log.info("audio_cache_put_skipped", key=key[:16], why="its voice was just erased")
            return False
        stored = await self._put(key, data, headers, reference)
        metrics.AUDIO_CACHE_WRITES.labels("ok" if stored else "failed").inc()
        return stored

    async def _put(self, key: str, data: bytes, headers: Mapping[str, str] | None, reference: str | None) -> bool:
        if reference is not None:
            try:
                await self.index.add(reference, key)
            except Exception as exc:
                log.warning("audio_cache_put_skipped", key=key[:16], why="reference index unavailable", error=repr(exc))
                return False
        for attempt in (1, 2):
            store = await self._open(create=True)
            if store is None:
                return False
            object_headers = {REFERENCE_HEADER: [reference]} if reference is not None else None
            meta = ObjectMeta(name=key, description=json.dumps(dict(headers or {})), headers=object_headers)
            try:
                await asyncio.wait_for(store.put(key, data, meta=meta), self.timeout_s * 4)
                if reference is not None and self._guarded(reference):  # erased while this put was under way
                    await self._delete(store, key)
                    return False
                return True
            except Exception as exc:  # a full bucket refuses (discard new); a lost one is made again
                self._store = None
                log.warning("audio_cache_put_failed", key=key[:16], bytes=len(data), error=repr(exc), attempt=attempt)
                if isinstance(exc, TimeoutError):  # the server is slow or away: do not wait twice
                    return False
        return False

    # --- erasure ------------------------------------------------------------------------------------
    def on_erase(self, listener: EraseListener) -> None:
        """``listener(digest, keys)`` after each erasure made or heard here (a copy in memory drops those keys)."""
        self._erase_listeners.append(listener)

    def erased(self, digest: str, keys: tuple[str, ...], at: float | None = None) -> None:
        """Note an erasure (``at``: when it was made, epoch s) and tell the listeners; for this instance's or another's.

        For :data:`GUARD_S` after it, audio from that clip is not stored: a synthesis that was running during
        the delete must not put the voice back into the cache.
        """
        at = time.time() if at is None else at
        if time.time() - at < GUARD_S:
            self._guard[digest] = at
        for listener in self._erase_listeners:
            try:
                listener(digest, keys)
            except Exception as exc:  # one listener's bug must not keep the others from forgetting
                log.warning("audio_cache_erase_listener_failed", error=repr(exc))

    async def _delete(self, store: ObjectStore, key: str) -> bool:
        """Delete one file and its metadata (the delete's own meta message keeps the headers: purged too)."""
        try:
            await asyncio.wait_for(store.delete(key), self.timeout_s)
            found = True
        except (ObjectNotFoundError, NotFoundError):
            found = False  # aged out, or never stored (the put failed after its index entry)
        js = self.nc.jetstream(timeout=self.timeout_s)
        await js.purge_stream(f"OBJ_{self.bucket}", subject=meta_subject(self.bucket, key))
        return found

    def _guarded(self, digest: str) -> bool:
        now = time.time()
        for old in [d for d, at in self._guard.items() if now - at >= GUARD_S]:
            del self._guard[old]
        return digest in self._guard

    async def erase_reference(self, digest: str) -> tuple[str, ...]:
        """Delete every cached file made from the clip ``digest``, with its metadata; the keys that were erased.

        Raises when the bucket cannot be reached: an erasure that did not happen must not look done. The
        listeners hear of it through :meth:`erased`, which the fleet's erasure calls on every instance.
        """
        keys = tuple(await asyncio.wait_for(self.index.keys(digest), self.timeout_s * 4))
        erased: list[str] = []
        if keys:  # opened directly, not through _open: a failure here must raise, not read as a miss
            try:
                store = await self.nc.jetstream(timeout=self.timeout_s).object_store(self.bucket)
            except BucketNotFoundError:
                pass  # the bucket is gone, and its files with it
            else:
                erased = [key for key in keys if await self._delete(store, key)]
        await self.index.forget(digest)
        log.info("audio_cache_erased", reference=digest[:12], files=len(erased), indexed=len(keys))
        return keys


def meta_subject(bucket: str, name: str) -> str:
    """The subject of an object's metadata in its bucket's stream (nats-py's and the Go client's layout)."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
