"""State events never depend on the KV, and a lost ``tts_state`` bucket comes back with the current states."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from nats.aio.client import Client

from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer


async def _bucket_created(nc: Client, bucket: str) -> asyncio.Future[None]:
    """A future set by the server's own advisory when the bucket's stream is created (no polling)."""
    created: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_advisory(msg: object) -> None:
        if not created.done():
            created.set_result(None)

    await nc.subscribe(f"$JS.EVENT.ADVISORY.STREAM.CREATED.KV_{bucket}", cb=on_advisory)
    await nc.flush()
    return created


async def _kv_value(nc: Client, bucket: str, key: str, timeout_s: float = 10.0) -> dict:
    """The key's value, from a KV watcher (waits on the update, not a timer)."""
    kv = await nc.jetstream(timeout=2).key_value(bucket)
    watcher = await kv.watch(key)
    try:
        while True:
            entry = await watcher.updates(timeout=timeout_s)
            if entry is not None and entry.value:
                return json.loads(entry.value)
    finally:
        await watcher.stop()


async def _next_state(sub, backend: str, to: str, timeout_s: float = 10.0) -> dict:
    while True:
        event = json.loads((await sub.next_msg(timeout=timeout_s)).data)
        if event["backend"] == backend and event["to"] == to:
            return event


async def test_events_flow_while_the_bucket_is_lost_and_the_bucket_comes_back(settings: Settings, nc: Client) -> None:
    app = TtsApp(settings.with_(backends=("piper",)))
    await app.start()
    try:
        assert app.registry is not None and app.publisher is not None
        await app.registry.actors["piper"].wait_settled(30)
        await app.publisher.flush()
        live = await nc.subscribe("tts.state.>")
        created = await _bucket_created(nc, settings.kv_bucket)
        await nc.jetstream().delete_key_value(settings.kv_bucket)  # as if an operator or a fault removed it

        answer = await TtsClient(nc).control("piper", "unload")
        assert answer["state"] == "missing"
        event = await _next_state(live, "piper", "missing")  # the subject did not wait on the failed KV write
        assert event["reason"] == "unload_requested"

        await asyncio.wait_for(created, 10)  # the failed put made the publisher recreate the bucket
        kept = await _kv_value(nc, settings.kv_bucket, "piper.test-instance")
        assert (kept["to"], kept["seq"]) == ("missing", event["seq"])
    finally:
        await app.stop()


async def test_a_server_restarted_with_an_empty_store_gets_the_bucket_and_states_back(
    tmp_path: Path, settings: Settings
) -> None:
    first = EmbeddedNatsServer(tmp_path / "store-1", port=-1)
    url = await asyncio.to_thread(first.start)
    port = first.port
    app = TtsApp(settings.with_(nats_url=url, backends=("piper",)))
    second: EmbeddedNatsServer | None = None
    watcher_nc = None
    try:
        await app.start()
        assert app.registry is not None and app.publisher is not None
        assert await app.registry.actors["piper"].wait_settled(30) == "loaded"
        await app.publisher.flush()

        assert first._proc is not None
        first._proc.kill()  # no clean shutdown; the store goes with it
        await asyncio.to_thread(first._proc.wait)
        second = EmbeddedNatsServer(tmp_path / "store-2", port=port)  # same port, EMPTY store
        await asyncio.to_thread(second.start)

        watcher_nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        created = await _bucket_created(watcher_nc, settings.kv_bucket)
        live = await watcher_nc.subscribe("tts.state.>")
        await watcher_nc.flush()
        await asyncio.wait_for(created, 15)  # recreated after the service's reconnect
        restored = await _kv_value(watcher_nc, settings.kv_bucket, "piper.test-instance")
        assert (restored["instance"], restored["to"]) == ("test-instance", "loaded")
        shared = await _kv_value(watcher_nc, settings.kv_bucket, "piper")
        assert shared["to"] == "loaded"

        answer = await TtsClient(watcher_nc).control("piper", "unload")  # live events keep flowing
        assert answer["state"] == "missing"
        event = await _next_state(live, "piper", "missing")
        assert event["seq"] > restored["seq"]
        assert (await _kv_value(watcher_nc, settings.kv_bucket, "piper.test-instance"))["seq"] == event["seq"]
    finally:
        if watcher_nc is not None:
            await watcher_nc.close()
        await app.stop()
        if second is not None:
            await asyncio.to_thread(second.stop)
        await asyncio.to_thread(first.stop)
