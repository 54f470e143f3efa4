"""State events on tts.state.<backend> and in the JetStream KV: order, late readers, watch, per-instance entries."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from statemachine import State
from tests.support.helpers import eventually
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings


async def test_piper_state_events_arrive_in_order_up_to_loaded(settings: Settings, nc: Client) -> None:
    events: list[dict] = []
    loaded = asyncio.Event()

    async def collect(msg) -> None:
        event = json.loads(msg.data)
        events.append(event)
        if event["to"] == "loaded":
            loaded.set()

    await nc.subscribe("tts.state.piper", cb=collect)
    await nc.flush()
    app = TtsApp(settings)
    await app.start()
    try:
        await asyncio.wait_for(loaded.wait(), 30)
    finally:
        await app.stop()
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert (events[0]["from"], events[0]["to"], events[0]["reason"]) == (None, "missing", "startup")
    assert events[-1]["from"] == "missing" and events[-1]["to"] == "loaded"
    assert all(e["backend"] == "piper" and e["instance"] == "test-instance" for e in events)


async def test_kv_holds_the_latest_state_for_a_late_reader(piper_loaded: TtsApp, nc: Client) -> None:
    assert piper_loaded.publisher is not None
    await piper_loaded.publisher.flush()
    kv = await nc.jetstream().key_value("tts_state")
    piper = json.loads((await kv.get("piper")).value)
    assert piper["to"] == "loaded"
    assert piper["seq"] == piper_loaded.registry.actors["piper"].lifecycle.last_event.seq
    chatterbox = json.loads((await kv.get("chatterbox")).value)
    assert (chatterbox["to"], chatterbox["reason"]) == ("failed", "package_missing")


async def test_watch_starts_from_the_kv_then_follows_live(piper_loaded: TtsApp, client: TtsClient, nc) -> None:
    assert piper_loaded.publisher is not None
    await nc.flush()
    seen = {}
    watcher = client.watch()

    async def four_backends() -> None:
        async for event in watcher:
            seen[event.backend] = event
            if len(seen) == 4:
                break

    await asyncio.wait_for(four_backends(), 10)
    await watcher.aclose()
    assert seen["piper"].to_state is State.LOADED
    assert seen["xtts"].to_state is State.FAILED


async def test_each_instance_keeps_its_own_kv_entry_and_removes_it_on_stop(settings: Settings, nc: Client) -> None:
    apps = [TtsApp(settings.with_(instance=f"kv-{i}", backends=("piper",))) for i in range(2)]
    for app in apps:
        await app.start()
    for app in apps:
        assert app.registry is not None and app.publisher is not None
        await app.registry.actors["piper"].wait_settled(30)
        await app.publisher.flush()
    kv = await nc.jetstream().key_value("tts_state")
    for i in range(2):
        entry = json.loads((await kv.get(f"piper.kv-{i}")).value)
        assert (entry["instance"], entry["to"]) == (f"kv-{i}", "loaded")
    # make kv-1 the last writer of the shared entry, then stop it
    apps[1].publisher.enqueue(apps[1].registry.actors["piper"].lifecycle.last_event)
    await apps[1].publisher.flush()
    assert json.loads((await kv.get("piper")).value)["instance"] == "kv-1"
    await apps[1].stop()
    keys = set(await kv.keys())
    assert "piper.kv-0" in keys and "piper.kv-1" not in keys
    # the shared entry now speaks for the instance still running
    assert json.loads((await kv.get("piper")).value)["instance"] == "kv-0"
    await apps[0].stop()
    with pytest.raises(NoKeysError):  # nothing left that looks alive
        await kv.keys()


async def test_watch_yields_each_event_once(piper_loaded: TtsApp, client: TtsClient) -> None:
    assert piper_loaded.publisher is not None
    await piper_loaded.publisher.flush()
    seen: list[tuple[str, str, int]] = []

    async def collect() -> None:
        async for event in client.watch():
            seen.append((event.backend, event.instance, event.seq))

    watching = asyncio.create_task(collect())
    await eventually(lambda: len(seen) >= 4)
    await client.control("piper", "unload")  # one live event after the KV's current values
    await eventually(lambda: ("piper", "test-instance", 2) in seen)
    watching.cancel()
    assert len(seen) == len(set(seen)), seen
