"""Publishes every state event on ``tts.state.<backend>`` and keeps the latest in KV.

Events are queued in order and published by one task, so subscribers see each
backend's events in ``seq`` order and a late reader finds the current state in
the JetStream KV bucket under the backend's name.
"""

from __future__ import annotations

import asyncio
import json
import re

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from statemachine import StateEvent
from tts_actor.config import Settings
from tts_actor.logs import get_logger

log = get_logger(__name__)
_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")


async def open_state_bucket(nc: Client, bucket: str) -> KeyValue | None:
    """Bind to (or create) the state bucket; None when the server has no JetStream."""
    js = nc.jetstream(timeout=2.0)
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    except Exception as exc:  # JetStream off on an external server: subjects still work
        log.warning(
            "jetstream_unavailable",
            bucket=bucket,
            error=repr(exc),
            fix="run nats-server with -js so late subscribers can read the state",
        )
        return None
    try:
        return await js.create_key_value(bucket=bucket, history=1, description="tts-actor backend states")
    except Exception as exc:
        log.warning("kv_create_failed", bucket=bucket, error=repr(exc))
        return None


class StatePublisher:
    """Ordered publisher of :class:`StateEvent` values; accepts events before it is connected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: asyncio.Queue[StateEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._kv: KeyValue | None = None

    def enqueue(self, event: StateEvent) -> None:
        self._queue.put_nowait(event)

    async def start(self, nc: Client) -> None:
        self._nc = nc
        self._kv = await open_state_bucket(nc, self.settings.kv_bucket)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._nc is not None
        while (event := await self._queue.get()) is not None:
            payload = json.dumps(event.to_dict()).encode()
            try:
                # KV first, then the subject: a watcher that subscribes, then reads the KV, misses nothing
                if self._kv is not None:
                    await self._kv.put(event.backend, payload)
                    await self._kv.put(self.instance_key(event.backend), payload)
                await self._nc.publish(self.settings.subject("state", event.backend), payload)
            except Exception as exc:  # a broken connection must not stop later events
                log.warning("state_publish_failed", backend=event.backend, seq=event.seq, error=repr(exc))
            finally:
                self._queue.task_done()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Return once every event queued so far is published and in the KV."""
        await asyncio.wait_for(self._queue.join(), timeout_s)

    def instance_key(self, backend: str) -> str:
        """``<backend>.<instance>``: this instance's own entry, beside ``<backend>`` (the latest of any)."""
        return f"{backend}.{_KEY_UNSAFE.sub('_', self.settings.instance)}"

    async def stop(self) -> None:
        """Publish what is queued, then take this instance's entries out of the KV."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, 5.0)
        except TimeoutError:
            self._task.cancel()
        await self._forget_instance()
        if self._nc is not None and self._nc.is_connected:
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
                await self._kv.delete(self.instance_key(backend))
                latest = await self._kv.get(backend)
                if not latest.value or json.loads(latest.value).get("instance") != self.settings.instance:
                    continue
                survivor = await self._newest_instance_entry(backend)
                if survivor is None:
                    await self._kv.delete(backend, last=latest.revision)  # unless another instance wrote since
                else:
                    await self._kv.update(backend, survivor, last=latest.revision)
            except Exception as exc:  # gone already, or raced by another instance: nothing to undo
                log.debug("kv_forget_skipped", backend=backend, error=repr(exc))

    async def _newest_instance_entry(self, backend: str) -> bytes | None:
        assert self._kv is not None
        try:
            keys = [k for k in await self._kv.keys() if k.startswith(f"{backend}.")]
        except NoKeysError:
            return None
        newest: tuple[str, bytes] | None = None
        for key in keys:
            value = (await self._kv.get(key)).value
            if value:
                at = json.loads(value).get("at", "")
                if newest is None or at > newest[0]:
                    newest = (at, value)
        return newest[1] if newest else None
