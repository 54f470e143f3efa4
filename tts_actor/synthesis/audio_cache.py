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
Hot files are also kept in this instance's memory (:class:`~tts_actor.synthesis.memory_cache.MemoryCache`):
a hit from there costs no round trip. A memory entry goes when the store's does: a delete seen on the
bucket's watch, the bucket deleted or purged (the server's advisory), or the entry's TTL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ObjectMeta, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from tts_actor.config import Settings
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_refs import ReferenceIndex
from tts_actor.synthesis.erasure_notice import EraseListener, ErasureNotice
from tts_actor.synthesis.memory_cache import MemoryCache
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
KEY_VERSION = 2  # bump when the audio a key stands for changes meaning (2: files carry the synthetic mark)
_SPACE = re.compile(r"\s+")
_NANOS = re.compile(r"(\.\d{6})\d+")
REOPEN_AFTER_S = 5.0  # after a failure to open the bucket, calls are misses for this long, not round trips
REFERENCE_HEADER = "Tts-Reference-Digest"  # in a cloned file's object headers: which clip made it
# told (reference digest, cache keys) when a voice's audio is erased; must not block


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
    marked: bool = True,
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
        "marked": marked,  # TTS_MARK_SYNTHETIC: the file's metadata differs
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
        self.index = ReferenceIndex(nc, settings, timeout_s)
        self.erasures = ErasureNotice()
        self.memory = MemoryCache(settings.audio_cache_memory_bytes)
        self._gone_subjects = Subjects.of(settings).audio_cache_gone()
        self._gone_subs: list[Subscription] = []
        self._watch: asyncio.Task[None] | None = None
        self._reconnects = nc.stats["reconnects"]

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
            await self._follow_deletes(self._store)
            return self._store

    async def _follow_deletes(self, store: ObjectStore) -> None:
        """Drop memory copies when the store loses entries: deletes on the bucket's watch, the bucket's advisories."""
        if not self.memory.max_bytes:
            return
        try:
            if not self._gone_subs:
                self._gone_subs = [await self.nc.subscribe(s, cb=self._bucket_gone) for s in self._gone_subjects]
            if self._watch is None or self._watch.done():
                watcher = await store.watch(updates_only=True)  # from now on: what is in memory came after
                self._watch = asyncio.create_task(self._follow(watcher))
        except Exception as exc:  # without the watch, memory could outlive a deleted entry: keep none
            log.warning("audio_cache_watch_failed", error=repr(exc), note="no memory copies until it is back")
            self.memory.clear()

    async def _follow(self, watcher: ObjectStore.ObjectWatcher) -> None:
        try:
            async for info in watcher:
                if info is not None and info.deleted:
                    self.memory.invalidate(info.name)
        except Exception as exc:
            log.warning("audio_cache_watch_ended", error=repr(exc))
        self.memory.clear()
        self._store = None  # reopened on the next call, with a new watch

    async def close(self) -> None:
        """Stop following the store (shutdown): the watch and the advisories."""
        if self._watch is not None:
            self._watch.cancel()
        for sub in self._gone_subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._gone_subs = []
        self.memory.clear()

    async def _bucket_gone(self, msg: Msg) -> None:
        log.info("audio_cache_bucket_gone", subject=msg.subject, dropped=len(self.memory))
        self.memory.clear()
        self._store = None  # reopened (or made again) on the next call
        if self._watch is not None:
            self._watch.cancel()

    def invalidate(self, key: str) -> bool:
        """Forget this instance's memory copy of ``key`` (the object store keeps its own: :meth:`delete`)."""
        return self.memory.invalidate(key)

    async def delete(self, key: str) -> bool:
        """Erase ``key`` from the fleet's cache: the object (every instance's watch then drops its copy) and ours."""
        self.memory.invalidate(key)
        store = await self._open(create=False)
        if store is None:
            return False
        try:
            await asyncio.wait_for(store.delete(key), self.timeout_s)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return True

    def remember(self, key: str, data: bytes, headers: Mapping[str, str], ttl_s: float | None = None) -> None:
        """Keep a file in memory (a reply just synthesized here, about to be stored; or one read from the store)."""
        if self.memory.max_bytes and (self._watch is not None and not self._watch.done()):
            self.memory.put(key, data, dict(headers), self.ttl_s if ttl_s is None else ttl_s)

    def _recall(self, key: str) -> CachedAudio | None:
        """The memory copy, trusted only while the store's deletes can be heard: connected, and no reconnect
        since it was kept (deletes in between could have been missed)."""
        if not self.nc.is_connected:
            return None
        if (reconnects := self.nc.stats["reconnects"]) != self._reconnects:
            self._reconnects = reconnects
            self.memory.clear()
            return None
        entry = self.memory.get(key)
        return None if entry is None else CachedAudio(entry.data, entry.headers)

    async def get(self, key: str) -> CachedAudio | None:
        """The cached audio, or None (a miss, or the cache unavailable)."""
        if (hot := self._recall(key)) is not None:
            return hot
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
        cached = CachedAudio(result.data, {str(k): str(v) for k, v in headers.items()})
        self.remember(key, cached.data, cached.headers, _ttl_left(info.mtime, self.ttl_s))
        return cached

    async def put(
        self, key: str, data: bytes, headers: Mapping[str, str] | None = None, reference: str | None = None
    ) -> bool:
        """Store the audio; False (logged) when the cache cannot take it now: full, lost, unreachable.

        ``reference``: the digest of the clip a cloned voice came from. Its index entry is written first,
        and when that fails the audio is not cached at all: an erasure must be able to find every file.
        """
        if reference is not None and self.erasures.guarded(reference):  # not a failed write: it must not be written
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
                break
            object_headers = {REFERENCE_HEADER: [reference]} if reference is not None else None
            meta = ObjectMeta(name=key, description=json.dumps(dict(headers or {})), headers=object_headers)
            try:
                await asyncio.wait_for(store.put(key, data, meta=meta), self.timeout_s * 4)
                if reference is not None and self.erasures.guarded(reference):  # erased while this put was under way
                    await self._delete(store, key)
                    break
                self.remember(key, data, headers or {})
                return True
            except Exception as exc:  # a full bucket refuses (discard new); a lost one is made again
                self._store = None
                log.warning("audio_cache_put_failed", key=key[:16], bytes=len(data), error=repr(exc), attempt=attempt)
                if isinstance(exc, TimeoutError):  # the server is slow or away: do not wait twice
                    break
        self.memory.invalidate(key)  # not in the store: no copy here either
        return False

    # --- erasure ------------------------------------------------------------------------------------
    def on_erase(self, listener: EraseListener) -> None:
        """``listener(digest, keys)`` after each erasure made or heard here (a copy in memory drops those keys)."""
        self.erasures.listen(listener)

    def erased(self, digest: str, keys: tuple[str, ...], at: float | None = None) -> None:
        """Note an erasure (``at``: when it was made, epoch s) and tell the listeners; for this instance's or another's.

        For a while after it (:class:`~tts_actor.synthesis.erasure_notice.ErasureNotice`), audio from that clip
        is not stored: a synthesis that was running during the delete must not put the voice back into the cache.
        """
        for key in keys:  # this instance's hot copies go with the files
            self.memory.invalidate(key)
        self.erasures.note(digest, keys, time.time() if at is None else at)

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


def _ttl_left(mtime: str | None, ttl_s: float) -> float:
    """How long the store keeps an object written at ``mtime`` (ISO 8601); the whole TTL if unknown."""
    if not mtime:
        return ttl_s
    try:  # a server's nanoseconds are more digits than datetime takes: keep microseconds
        written = datetime.fromisoformat(_NANOS.sub(r"\1", mtime.replace("Z", "+00:00")))
    except ValueError:
        return ttl_s
    if written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    return ttl_s - (time.time() - written.timestamp())
