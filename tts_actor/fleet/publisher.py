"""Publishes every state event on ``tts.state.<backend>`` and keeps the latest in KV.

Events are queued in order and published by one task, so subscribers see each
backend's events in ``seq`` order and a late reader finds the current state in
the JetStream KV bucket under the backend's name.

The subject never depends on the KV: a KV write that fails (JetStream off, the bucket
lost with a server's store) marks the KV broken and events keep flowing on the subject
at once. A keep-alive task re-puts this instance's current states every
``fleet_ttl_s / 3``: that refreshes the bucket's TTL (an instance killed without
cleanup ages out of the fleet view) and, after a reconnect or a lost bucket, recreates
the bucket and puts the current states back.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from statemachine import StateEvent
from tts_actor.config import Settings
from tts_actor.fleet.state_kv import decode_event, encode_event, instance_entry_of, instance_key, shared_key
from tts_actor.observability import metrics
from tts_actor.observability.logs import get_logger
from tts_actor.wire.subjects import Subjects

log = get_logger(__name__)
KV_WRITE_TIMEOUT_S = 2.0


async def open_state_bucket(nc: Client, bucket: str, ttl_s: float | None = None, replicas: int = 1) -> KeyValue | None:
    """Bind to (or create) the state bucket with entries that age out after ``ttl_s``; None without JetStream."""
    js = nc.jetstream(timeout=KV_WRITE_TIMEOUT_S)
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        kv = None
    except Exception as exc:  # JetStream off on an external server: subjects still work
        log.warning(
            "jetstream_unavailable",
            bucket=bucket,
            error=repr(exc),
            fix="run nats-server with -js so late subscribers can read the state (a cluster electing leaders "
            "answers again shortly: the keep-alive retries)",
        )
        return None
    if kv is not None:
        await _ensure_ttl(nc, bucket, ttl_s)
        return kv
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl_s, replicas=replicas, description="tts-actor states")
    try:
        # the marker makes an entry that ages out visible to watchers (`tts-actor watch`: "aged out")
        return await js.create_key_value(config, limit_marker_ttl=ttl_s)
    except Exception as exc:  # a server before 2.11 has no limit markers: age out silently
        log.debug("kv_limit_markers_unavailable", bucket=bucket, error=repr(exc))
    try:
        return await js.create_key_value(config)
    except Exception as exc:
        log.warning("kv_create_failed", bucket=bucket, error=repr(exc))
        return None


async def _ensure_ttl(nc: Client, bucket: str, ttl_s: float | None) -> None:
    """A bucket made by an older version (no TTL) gets one, so dead instances age out there too."""
    if not ttl_s:
        return
    js = nc.jetstream(timeout=KV_WRITE_TIMEOUT_S)
    try:
        info = await js.stream_info(f"KV_{bucket}")
        if info.config.max_age and abs(info.config.max_age - ttl_s) < 0.001:
            return
        info.config.max_age = ttl_s
        info.config.duplicate_window = min(info.config.duplicate_window or ttl_s, ttl_s)
        await js.update_stream(info.config)
        log.info("kv_ttl_set", bucket=bucket, ttl_s=ttl_s)
    except Exception as exc:  # another instance with another TTL, or no rights: the subjects still work
        log.warning("kv_ttl_not_set", bucket=bucket, error=repr(exc))


class StatePublisher:
    """Ordered publisher of :class:`StateEvent` values; accepts events before it is connected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: asyncio.Queue[StateEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._kv_ok = False  # also tts_state_kv_up; 0 until the bucket is open
        self._latest: dict[str, StateEvent] = {}  # this instance's current state per backend, as published
        self._kv_lock = asyncio.Lock()  # one writer at a time: a refresh never lands an older event on a newer
        self._nudged = asyncio.Event()
        self._reopen = False  # after a reconnect the server may have lost the bucket with its store

    def enqueue(self, event: StateEvent) -> None:
        self._queue.put_nowait(event)

    @property
    def kv_ok(self) -> bool:
        """The last KV write went through (false without JetStream, or while the bucket is lost)."""
        return self._kv_ok

    @property
    def _kv_ok(self) -> bool:
        return self._kv_ok_now

    @_kv_ok.setter
    def _kv_ok(self, ok: bool) -> None:
        """Every change of the KV's health is also ``tts_state_kv_up``, for the "KV writes failing" alert."""
        self._kv_ok_now = ok
        metrics.STATE_KV_UP.set(1 if ok else 0)

    async def start(self, nc: Client) -> None:
        self._nc = nc
        await self._open_bucket()
        self._task = asyncio.create_task(self._run())
        self._keepalive_task = asyncio.create_task(self._keepalive())

    def nudge(self) -> None:
        """Refresh the KV now (after a reconnect): recreate the bucket if it is gone, put the states back."""
        self._nudged.set()

    async def on_reconnected(self) -> None:
        self._reopen = True
        self.nudge()

    async def _open_bucket(self) -> None:
        assert self._nc is not None
        s = self.settings
        self._kv = await open_state_bucket(self._nc, s.kv_bucket, s.fleet_ttl_s, s.js_replicas)
        self._kv_ok = self._kv is not None

    async def _run(self) -> None:
        assert self._nc is not None
        while (event := await self._queue.get()) is not None:
            payload = encode_event(event)
            self._latest[event.backend] = event
            try:
                # KV first, then the subject: a watcher that subscribes, then reads the KV, misses nothing
                if self._kv_ok:
                    await self._put_event(event, payload)
                try:
                    await self._nc.publish(Subjects.of(self.settings).state(event.backend), payload)
                except Exception as exc:  # a broken connection must not stop later events
                    log.warning("state_publish_failed", backend=event.backend, seq=event.seq, error=repr(exc))
            finally:
                self._queue.task_done()

    async def _put_event(self, event: StateEvent, payload: bytes) -> None:
        """Both KV entries of one event; a failure marks the KV broken for the keep-alive to repair."""
        assert self._kv is not None
        try:
            async with self._kv_lock:
                await asyncio.wait_for(self._kv.put(shared_key(event.backend), payload), KV_WRITE_TIMEOUT_S)
                await asyncio.wait_for(self._kv.put(self.instance_key(event.backend), payload), KV_WRITE_TIMEOUT_S)
        except Exception as exc:
            self._kv_ok = False
            self._nudged.set()
            log.warning("kv_put_failed", backend=event.backend, seq=event.seq, error=repr(exc), note="subject still")

    async def _keepalive(self) -> None:
        interval = max(0.05, self.settings.fleet_ttl_s / 3)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), interval)
            self._nudged.clear()
            try:
                await self.refresh()
            except Exception as exc:  # the server is away: the next round tries again
                self._kv_ok = False
                log.debug("kv_refresh_failed", error=repr(exc))

    async def refresh(self) -> None:
        """Put this instance's current states again (recreating the bucket first if it was lost)."""
        if self._nc is None or not self._nc.is_connected:
            return
        was_ok = self._kv_ok
        if self._kv is None or not self._kv_ok or self._reopen:
            self._reopen = False
            await self._open_bucket()
        if self._kv is None:
            return
        async with self._kv_lock:
            for backend, event in list(self._latest.items()):
                payload = encode_event(event)
                await asyncio.wait_for(self._kv.put(self.instance_key(backend), payload), KV_WRITE_TIMEOUT_S)
                await self._refresh_shared(backend, payload)
        self._kv_ok = True
        if not was_ok:
            log.info("kv_restored", bucket=self.settings.kv_bucket, backends=sorted(self._latest))

    async def _refresh_shared(self, backend: str, payload: bytes) -> None:
        """``<backend>`` stays the latest of any instance: refreshed only while it holds ours, or made if gone."""
        assert self._kv is not None
        try:
            entry = await asyncio.wait_for(self._kv.get(shared_key(backend)), KV_WRITE_TIMEOUT_S)
        except KeyNotFoundError:  # aged out with a dead instance, deleted, or a new bucket
            with contextlib.suppress(Exception):  # another instance made it first
                await asyncio.wait_for(self._kv.create(shared_key(backend), payload), KV_WRITE_TIMEOUT_S)
            return
        if self._ours(entry.value):
            with contextlib.suppress(Exception):  # another instance wrote since: theirs is newer
                await asyncio.wait_for(
                    self._kv.update(shared_key(backend), payload, last=entry.revision), KV_WRITE_TIMEOUT_S
                )

    def _ours(self, value: bytes | None) -> bool:
        """The entry holds an event of this instance."""
        event = decode_event(value)
        return event is not None and event.instance == self.settings.instance

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Return once every event queued so far is published (and in the KV, when it is there)."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    def instance_key(self, backend: str) -> str:
        """``<backend>.<instance>``: this instance's own entry, beside ``<backend>`` (the latest of any)."""
        return instance_key(backend, self.settings.instance)

    async def stop(self) -> None:
        """Publish what is queued, then take this instance's entries out of the KV."""
        if self._task is None:
            return
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, 5.0)
        except TimeoutError:
            self._task.cancel()
        await self._forget_instance()
        if self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)

    async def _forget_instance(self) -> None:
        """A stopped instance must not look alive to a late reader.

        Its own ``<backend>.<instance>`` entries go. ``<backend>`` goes only if it still holds
        this instance's event, and then it takes the newest event of a live instance if one remains.
        """
        if self._kv is None or self._nc is None or not self._nc.is_connected:
            return
        for backend in self.settings.backends:
            try:
                await asyncio.wait_for(self._kv.delete(self.instance_key(backend)), KV_WRITE_TIMEOUT_S)
                latest = await asyncio.wait_for(self._kv.get(shared_key(backend)), KV_WRITE_TIMEOUT_S)
                if not self._ours(latest.value):
                    continue
                survivor = await self._newest_instance_entry(backend)
                if survivor is None:  # unless another instance wrote since
                    await self._kv.delete(shared_key(backend), last=latest.revision)
                else:
                    await self._kv.update(shared_key(backend), survivor, last=latest.revision)
            except Exception as exc:  # gone already, or raced by another instance: nothing to undo
                log.debug("kv_forget_skipped", backend=backend, error=repr(exc))

    async def _newest_instance_entry(self, backend: str) -> bytes | None:
        assert self._kv is not None
        try:
            keys = [k for k in await self._kv.keys() if instance_entry_of(k, backend)]
        except NoKeysError:
            return None
        newest: tuple[str, bytes] | None = None
        for key in keys:
            value = (await self._kv.get(key)).value
            event = decode_event(value)
            if value and event is not None and (newest is None or event.at > newest[0]):
                newest = (event.at, value)
        return newest[1] if newest else None
