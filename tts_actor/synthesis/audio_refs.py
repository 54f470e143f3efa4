"""The audio cache's index from a reference clip's digest to the cache keys made from it.

A cloned voice's audio is cached under a digest of everything that changes it, so the key alone
does not say which voice made it. Erasing a voice must find every such file on any instance, after
any restart: each put of cloned audio first writes ``<digest>.<key>`` into a KV bucket beside the
cache (``<audio cache bucket>_refs``, the cache's TTL plus a margin, so an entry never ages out
before its file), and the erasure reads that digest's keys with a server-side filter.
"""

from __future__ import annotations

import asyncio
import re

from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from tts_actor.config import Settings
from tts_actor.wire.subjects import Subjects

DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")  # sha256 hex: what profiles and the cache key on
TTL_MARGIN_S = 3600.0  # an index entry outlives its file: the file is written just after it


class ReferenceIndex:
    """``add`` before a put of cloned audio; ``keys`` and ``forget`` when the voice is erased."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.bucket = Subjects.of(settings).audio_refs_bucket
        self.ttl_s = settings.audio_cache_ttl_s + TTL_MARGIN_S
        self.replicas = settings.js_replicas
        self.timeout_s = timeout_s
        self._kv: KeyValue | None = None

    async def _open(self, create: bool) -> KeyValue | None:
        if self._kv is None:
            js = self.nc.jetstream(timeout=self.timeout_s)
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                if not create:
                    return None
                self._kv = await js.create_key_value(
                    bucket=self.bucket,
                    description="tts-actor audio cache: reference digest -> cache keys",
                    ttl=self.ttl_s,
                    replicas=self.replicas,
                    storage=StorageType.FILE,
                )
        return self._kv

    async def add(self, digest: str, key: str) -> None:
        """Record that ``key`` was made from the clip ``digest``; raises when it could not be recorded."""
        _check(digest)
        kv = await self._open(create=True)
        assert kv is not None
        try:
            await asyncio.wait_for(kv.put(f"{digest}.{key}", b""), self.timeout_s)
        except Exception:
            self._kv = None
            raise

    async def keys(self, digest: str) -> list[str]:
        """Every cache key recorded for ``digest`` (none when the bucket does not exist yet)."""
        _check(digest)
        kv = await self._open(create=False)
        if kv is None:
            return []
        watcher = await kv.watch(f"{digest}.>", meta_only=True, ignore_deletes=True)
        found: list[str] = []
        try:
            while (entry := await watcher.updates(timeout=self.timeout_s)) is not None:
                found.append(entry.key.split(".", 1)[1])
        finally:
            await watcher.stop()
        return found

    async def forget(self, digest: str) -> None:
        """Remove the digest's entries without a trace (a purge of their subjects, no delete markers)."""
        _check(digest)
        if await self._open(create=False) is None:
            return
        js = self.nc.jetstream(timeout=self.timeout_s)
        await js.purge_stream(f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{digest}.>")


def _check(digest: str) -> None:
    if not DIGEST_RE.match(digest):
        raise ValueError("a reference digest is 64 lower-case hex characters (sha256)")
