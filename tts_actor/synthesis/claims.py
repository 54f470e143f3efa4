"""Fleet-wide coalescing: which instance synthesizes an audio cache key now, as a claim in JetStream KV.

The instance about to synthesize a key creates its claim (create-if-absent: one winner), refreshes it every
third of the bucket's TTL while it works, and deletes it once the file is in the audio cache. The others
watch the claim instead of synthesizing: its delete (or purge) is the completion event, after which they read
the stored file. A holder that dies stops refreshing: a waiter that hears nothing for a whole TTL takes the
claim over (compare-and-set on the revision it last saw) and synthesizes itself. An instance that stops
releases its claims as its requests end. Like the cache, this is an optimisation: with the KV unreachable,
each instance synthesizes on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from tts_actor.config import Settings
from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
REOPEN_AFTER_S = 5.0


class Waited(enum.Enum):
    RELEASED = "released"  # the holder deleted its claim: its file is stored (or its synthesis failed)
    DEAD = "dead"  # no refresh for a whole TTL: take the claim over
    TIMEOUT = "timeout"  # the waiter's own deadline passed
    UNKNOWN = "unknown"  # the claim could not be watched (the KV went away): synthesize without it


@dataclass
class Claim:
    """A claim this instance holds; :meth:`FleetClaims.release` ends it."""

    key: str
    revision: int
    refresher: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class HeldElsewhere:
    holder: str
    revision: int


class FleetClaims:
    """Claims in the ``TTS_AUDIO_CLAIMS_BUCKET`` KV bucket (TTL ``TTS_AUDIO_CLAIM_TTL_S``)."""

    def __init__(self, nc: Client, settings: Settings, timeout_s: float = 2.0) -> None:
        self.nc = nc
        self.bucket = settings.audio_claims_bucket
        self.ttl_s = settings.audio_claim_ttl_s
        self.replicas = settings.js_replicas
        self.instance = settings.instance
        self.timeout_s = timeout_s
        self._kv: KeyValue | None = None
        self._open_failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> KeyValue | None:
        if self._kv is not None:
            return self._kv
        if self._open_failed_at is not None and time.monotonic() - self._open_failed_at < REOPEN_AFTER_S:
            return None
        async with self._lock:
            if self._kv is None:
                js = self.nc.jetstream(timeout=self.timeout_s)
                try:
                    try:
                        self._kv = await js.key_value(self.bucket)
                    except BucketNotFoundError:
                        self._kv = await js.create_key_value(
                            bucket=self.bucket,
                            description="tts-actor: who synthesizes which audio cache key now",
                            ttl=self.ttl_s,
                            history=1,
                            replicas=self.replicas,
                            storage=StorageType.MEMORY,
                        )
                    # the bucket's TTL, not ours, is when a claim ages out: refresh and judge by it
                    ttl_s = (await self._kv.status()).ttl
                except Exception as exc:
                    self._kv = None
                    self._open_failed_at = time.monotonic()
                    log.warning("audio_claims_unavailable", bucket=self.bucket, error=repr(exc))
                    return None
                if ttl_s and ttl_s != self.ttl_s:
                    log.info("audio_claims_bucket_ttl", bucket=self.bucket, ttl_s=ttl_s, configured_s=self.ttl_s)
                    self.ttl_s = ttl_s
                self._open_failed_at = None
            return self._kv

    async def acquire(self, key: str, stale: int | None = None) -> Claim | HeldElsewhere | None:
        """Our claim; or who holds it; or None (the KV is away: synthesize without asking the fleet).

        ``stale``: the revision of a claim whose holder stopped refreshing, taken over if still unchanged.
        """
        kv = await self._open()
        if kv is None:
            return None
        value = json.dumps({"instance": self.instance, "since_ms": round(time.time() * 1000)}).encode()
        try:
            if stale is None:
                revision = await asyncio.wait_for(kv.create(key, value), self.timeout_s)
            else:
                revision = await asyncio.wait_for(kv.update(key, value, last=stale), self.timeout_s)
        except KeyWrongLastSequenceError:
            return await self._holder(kv, key)
        except Exception as exc:
            self._kv = None
            log.warning("audio_claim_failed", key=key[:16], error=repr(exc))
            return None
        claim = Claim(key, revision)
        claim.refresher = asyncio.create_task(self._refresh(kv, claim, value))
        return claim

    async def _holder(self, kv: KeyValue, key: str) -> HeldElsewhere | None:
        try:
            entry = await asyncio.wait_for(kv.get(key), self.timeout_s)
        except Exception:  # released in between: the caller looks again
            return HeldElsewhere("", 0)
        try:
            holder = str(json.loads(entry.value or b"{}").get("instance", ""))
        except ValueError:
            holder = ""
        return HeldElsewhere(holder, entry.revision or 0)

    async def _refresh(self, kv: KeyValue, claim: Claim, value: bytes) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                claim.revision = await asyncio.wait_for(
                    kv.update(claim.key, value, last=claim.revision), self.timeout_s
                )
            except KeyWrongLastSequenceError:  # we were taken for dead: the taker synthesizes too
                log.warning("audio_claim_lost", key=claim.key[:16])
                return
            except Exception as exc:
                log.warning("audio_claim_refresh_failed", key=claim.key[:16], error=repr(exc))

    async def release(self, claim: Claim | None) -> None:
        """Stop refreshing and delete the claim (only ours: by its revision); waiters take that as done."""
        if claim is None:
            return
        if claim.refresher is not None:
            claim.refresher.cancel()
        kv = self._kv
        if kv is None:
            return
        try:
            await asyncio.wait_for(kv.delete(claim.key, last=claim.revision), self.timeout_s)
        except Exception as exc:  # taken over, or the KV away: its TTL ends it
            log.info("audio_claim_release_failed", key=claim.key[:16], error=repr(exc))

    async def wait(self, key: str, deadline: float | None) -> tuple[Waited, int]:
        """Until the claim on ``key`` is released, its holder is dead, or ``deadline`` (``time.monotonic()``).

        Returns the outcome and the revision last seen (what :meth:`acquire` takes over from a dead holder).
        """
        kv = await self._open()
        if kv is None:
            return Waited.UNKNOWN, 0
        try:
            watcher = await kv.watch(key)  # the current value first (or nothing), then every change
        except Exception as exc:
            log.warning("audio_claim_watch_failed", key=key[:16], error=repr(exc))
            return Waited.UNKNOWN, 0
        revision, seen = 0, False
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return Waited.TIMEOUT, revision
                try:
                    entry = await watcher.updates(self.ttl_s if left is None else min(self.ttl_s, left))
                except nats.errors.TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        return Waited.TIMEOUT, revision
                    return (Waited.DEAD if seen else Waited.UNKNOWN), revision
                if entry is None:  # the end of what was there: nothing means nobody holds it
                    if not seen:
                        return Waited.RELEASED, revision
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    return Waited.RELEASED, entry.revision or 0
                seen, revision = True, entry.revision or 0
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
