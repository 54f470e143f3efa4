"""Erasure that reaches every copy of a deleted voice: its clip, its cached audio, every instance's conditioning.

Deleting a profile here removes every cached file made from the clip (found through the audio cache's
digest index), tells the fleet on ``<prefix>.erasure.voice``, then removes the clip (and its metadata).
That subject is kept in the JetStream stream ``<PREFIX>_ERASURES`` (``TTS_ERASURE_MAX_AGE_S``), and each
instance reads it with an ordered consumer from the first message: on start it replays every erasure
(an instance that was stopped during a delete learns it), and after a reconnection the consumer
resumes where it stopped (one that was cut off learns it then). Each event makes every backend drop
the conditioning computed from that clip and tells the audio cache's erase listeners.

A synthesis that was running during the delete may store its audio a moment later: for
:data:`GUARD_S` after an erasure the audio cache refuses that clip's audio, and the deleting
instance sweeps the index once more after :data:`SWEEP_AFTER_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.registry import Registry
from tts_actor.observability.logs import get_logger
from tts_actor.synthesis.audio_cache import AudioCache
from tts_actor.synthesis.audio_refs import DIGEST_RE
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.synthesis.profiles import ProfileStore
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
SWEEP_AFTER_S = 2.0  # a second look at the index, for a put that was in flight during the erasure
MAX_EVENT_KEYS = 5000  # cache keys named in one event (64 hex each: ~330 KB); more are erased all the same


@dataclass(frozen=True)
class Erased:
    """What one delete removed: the clip's digest and the cached files made from it."""

    digest: str
    cached_files: int


class FleetErasure:
    """``erase_voice`` on the deleting instance; ``start`` on every instance to hear (and replay) erasures."""

    def __init__(
        self,
        nc: Client,
        settings: Settings,
        registry: Registry,
        profiles: ProfileStore,
        cache: AudioCache,
        pipeline: SynthesisPipeline | None = None,
    ) -> None:
        self.nc = nc
        self.pipeline = pipeline  # the syntheses running here: one speaking an erased voice stops
        self.settings = settings
        self.subjects = Subjects.of(settings)
        self.registry = registry
        self.profiles = profiles
        self.cache = cache
        self.timeout_s = 5.0
        self.applied = 0  # erasure events applied here (replayed ones included)
        self._sub: Any = None
        self._sweeps: set[asyncio.Task[None]] = set()

    async def _ensure_stream(self) -> None:
        js = self.nc.jetstream(timeout=self.timeout_s)
        config = StreamConfig(
            name=self.subjects.erasure_stream,
            description="tts-actor erasures: digests of deleted voices' clips, for every instance",
            subjects=[self.subjects.erasure],
            retention=RetentionPolicy.LIMITS,
            max_age=self.settings.erasure_max_age_s,
            storage=StorageType.FILE,
            num_replicas=self.settings.js_replicas,
        )
        try:
            await js.add_stream(config)
        except Exception:  # it exists with another retention: take this instance's setting
            await js.update_stream(config)

    async def start(self) -> None:
        """Replay every kept erasure, then hear new ones; without JetStream, a warning (nothing to replay)."""
        try:
            await self._ensure_stream()
            js = self.nc.jetstream(timeout=self.timeout_s)
            self._sub = await js.subscribe(
                self.subjects.erasure,
                stream=self.subjects.erasure_stream,
                cb=self._on_event,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        except Exception as exc:
            log.warning("erasures_unavailable", error=repr(exc), fix="erasures need JetStream (nats-server -js)")

    async def stop(self) -> None:
        for task in self._sweeps:
            task.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sub.unsubscribe(), 2.0)
            self._sub = None

    async def delete(self, profile_id: str) -> bool:
        """:meth:`ProfileStore.delete`'s shape (True when there was such a voice), with the erasure behind it.

        What a use case below this layer (the consent cascade, say) is handed instead of the profile store's own;
        a failure is the structured ``internal`` error that tells the caller to send the delete again.
        """
        try:
            return await self.erase_voice(profile_id) is not None
        except TtsError:
            raise
        except Exception as exc:
            log.warning("voice_erasure_failed", error=repr(exc))
            raise erasure_failed(exc) from None

    async def erase_voice(self, profile_id: str) -> Erased | None:
        """Delete the profile and everything made from its clip, fleet-wide; None when there was no such profile.

        The cached audio goes first and the fleet is told next, both while the profile is still there: a failure
        (or this instance killed) before the clip is removed leaves an id the caller's retry erases everything
        by; once the clip is gone, nothing could name its digest to the fleet again. Raises when a store cannot
        be reached: the delete is not reported done.
        """
        try:
            digest = (await self.profiles.get(profile_id)).digest
        except TtsError as error:
            if error.code is ErrorCode.UNKNOWN_VOICE:
                return None
            raise
        keys = await self.cache.erase_reference(digest)
        await self._tell_fleet(digest, keys)  # conditioning made after this is not kept again (ConditioningCache)
        if await self.profiles.remove(profile_id) is None:
            return None  # deleted meanwhile by another caller
        task = asyncio.create_task(self._sweep(digest))
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)
        return Erased(digest, len(keys))

    async def _tell_fleet(self, digest: str, keys: tuple[str, ...]) -> None:
        """Applied here at once; the others when the event reaches them (now, or when they are back)."""
        self._apply(digest, keys, time.time())
        event = {"digest": digest, "keys": list(keys[:MAX_EVENT_KEYS]), "at": time.time(), "by": self.settings.instance}
        js = self.nc.jetstream(timeout=self.timeout_s)
        await js.publish(self.subjects.erasure, json.dumps(event).encode(), stream=self.subjects.erasure_stream)

    async def _sweep(self, digest: str) -> None:
        await asyncio.sleep(SWEEP_AFTER_S)
        try:
            if late := await self.cache.erase_reference(digest):
                log.info("erasure_swept_late_put", files=len(late))
                await self._tell_fleet(digest, late)  # an in-memory copy of a late put may be on any instance
        except Exception as exc:
            log.warning("erasure_sweep_failed", error=repr(exc))

    async def _on_event(self, msg: Msg) -> None:
        try:
            event = json.loads(msg.data)
            digest, keys, at = event["digest"], tuple(event.get("keys") or ()), float(event.get("at") or 0)
            if not isinstance(digest, str) or not DIGEST_RE.match(digest):
                raise ValueError("digest")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("erasure_event_malformed", error=repr(exc))
            return
        if event.get("by") == self.settings.instance and at > time.time() - SWEEP_AFTER_S:
            return  # this instance's own, applied when it was made
        self._apply(digest, tuple(k for k in keys if isinstance(k, str)), at)

    def _apply(self, digest: str, keys: tuple[str, ...], at: float) -> None:
        """Syntheses speaking the clip stop, every backend drops its conditioning; the audio cache guards, tells."""
        stopped = self.pipeline.stop_voice(digest) if self.pipeline is not None else 0
        dropped = sum(actor.adapter.forget_reference(digest) for actor in self.registry.actors.values())
        self.cache.erased(digest, keys, at)
        self.applied += 1
        log.info(
            "erasure_applied",
            reference=digest[:12],
            conditioning_dropped=dropped,
            cached_keys=len(keys),
            syntheses_stopped=stopped,
        )


def erasure_failed(exc: BaseException) -> TtsError:
    """A delete that could not reach a store or the fleet: not reported done; the retry erases what is left."""
    return TtsError(
        ErrorCode.INTERNAL,
        f"the voice could not be erased everywhere: {type(exc).__name__}",
        "Send the same tts.voices.delete again when JetStream is reachable; it erases what is left.",
        retry_after_ms=1000,
    )
