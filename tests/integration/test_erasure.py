"""Deleting a voice reaches every copy: the clip, the cached audio made from it, every instance's conditioning.

Two (then three) TtsApps share one real nats-server, its object stores and its streams. Chatterbox is the
stand-in package of tests/support/stand_in_chatterbox.py (its weights cannot run here); everything else is
real: NATS, JetStream, the service, the adapters and their conditioning LRUs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.helpers import eventually
from tests.support.proxy import CuttableProxy
from tests.support.stand_in_chatterbox import chatterbox_settings, checkpoint, findable_chatterbox, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.synthesis.audio_cache import REFERENCE_HEADER
from tts_actor.wire.messages import SynthesisRequest

TEXTS = ("Guten Tag, wie geht es Ihnen?", "Bonjour, comment allez-vous?", "Wie spät ist es jetzt?")


def holds(adapter: ChatterboxBackend, digest: str) -> bool:
    """The adapter's conditioning LRU has an entry computed from the clip ``digest``."""
    return any(key[-1] == digest for key in list(adapter._profiles._entries))


async def cached_objects(nc: Client, bucket: str, ignore_deletes: bool = True) -> dict[str, str | None]:
    """The objects in the audio cache bucket, each with the clip digest it was made from (None: a built-in voice).

    With ``ignore_deletes=False`` deleted objects' tombstones are listed too.
    """
    store = await nc.jetstream().object_store(bucket)
    try:
        infos = await store.list(ignore_deletes=ignore_deletes)
    except NotFoundError:
        return {}
    return {info.name: ((info.headers or {}).get(REFERENCE_HEADER) or [None])[0] for info in infos}


@pytest.mark.usefixtures("findable_chatterbox")
async def test_deleting_a_voice_erases_its_cached_audio_and_every_instances_conditioning(
    settings: Settings, tmp_path: Path, client: TtsClient, nc: Client
) -> None:
    adapters = {
        name: ChatterboxBackend(chatterbox_settings(settings, tmp_path, name, require_consent=False))
        for name in ("a", "b", "c")
    }
    apps = {
        name: TtsApp(
            chatterbox_settings(settings, tmp_path, name, require_consent=False),
            adapters={"chatterbox": adapters[name]},
        )
        for name in ("a", "b", "c")
    }
    a, b, c = apps["a"], apps["b"], apps["c"]
    for app in (a, b, c):
        await app.start()
        await next_state(app, "chatterbox", State.LOADED)
    try:
        doomed = await client.create_voice(tone_wav(3.0, hz=440.0), reference_text="A secret phrase.", language="de")
        kept = await client.create_voice(tone_wav(3.0, hz=330.0), language="de")
        digest = (await a.service.profiles.get(doomed["voice_profile"])).digest  # type: ignore[union-attr]
        kept_digest = (await a.service.profiles.get(kept["voice_profile"])).digest  # type: ignore[union-attr]
        # the queue group spreads requests: clone until every instance computed the doomed clip's conditioning
        for n in range(60):
            profile = doomed["voice_profile"] if n % 2 == 0 else kept["voice_profile"]
            text = f"{TEXTS[n % len(TEXTS)]} {n}"
            await client.synthesize(SynthesisRequest(text=text, language="de", voice_profile=profile))
            if all(holds(adapter, digest) for adapter in adapters.values()) and n >= 5:
                break
        assert all(holds(adapter, digest) for adapter in adapters.values()), "not every instance cloned the voice"
        await client.synthesize(SynthesisRequest(text="Ohne Profil gesprochen.", language="de"))  # built-in voice
        for app in (a, b, c):
            await app.service.cached.drain()  # type: ignore[union-attr]
        bucket = settings.audio_cache_bucket
        before = await cached_objects(nc, bucket)
        assert len(before) >= 7, before

        key = ("chatterbox", "multilingual", digest)
        survivor = adapters["c"]._profiles.get(key)
        await c.stop()  # away during the delete
        heard: dict[str, list[tuple[str, tuple[str, ...]]]] = {"a": [], "b": []}
        for name in heard:  # what an in-memory copy in front of the bucket hooks into
            apps[name].service.cached.cache.on_erase(lambda d, keys, name=name: heard[name].append((d, keys)))  # type: ignore[union-attr]
        unused = await client.create_voice(tone_wav(3.0, hz=550.0), language="de")  # nothing made from it
        started = time.perf_counter()
        assert await client.delete_voice(unused["voice_profile"]) == {"deleted": True}
        baseline_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        reply = await client.delete_voice(doomed["voice_profile"])
        delete_ms = (time.perf_counter() - started) * 1000
        assert reply == {"deleted": True}

        after = await cached_objects(nc, bucket)
        doomed_files = {name for name, ref in before.items() if ref == digest}
        print(f"\naudio cache objects: {len(before)} before the delete, {len(after)} after, {len(doomed_files)} erased")
        print(f"tts.voices.delete: {delete_ms:.1f} ms erasing {len(doomed_files)} files; {baseline_ms:.1f} ms none")
        assert doomed_files and set(after) == set(before) - doomed_files, "the doomed voice's audio is gone, only that"
        assert set(after.values()) == {kept_digest, None}, "the other voice's and the built-in voice's audio stayed"
        tombstones = set(await cached_objects(nc, bucket, ignore_deletes=False)) - set(after)
        assert not tombstones, "a deleted file left its metadata (and the clip's digest) in the bucket"
        await eventually(lambda: not holds(adapters["a"], digest) and not holds(adapters["b"], digest), 5.0)
        assert holds(adapters["a"], kept_digest) or holds(adapters["b"], kept_digest), "the other voice was dropped"
        await eventually(lambda: all(any(d == digest for d, _ in got) for got in heard.values()), 5.0)
        assert all(set(keys) == doomed_files for got in heard.values() for d, keys in got if d == digest), heard
        # a synthesis that was running during the delete cannot put the voice back
        late = await a.service.cached.cache.put("f" * 64, b"RIFF late", {}, reference=digest)  # type: ignore[union-attr]
        assert late is False and "f" * 64 not in await cached_objects(nc, bucket)
        # the instance that was stopped: give its adapter the entry back, as an LRU that outlived an outage would
        adapters["c"]._profiles.put(key, survivor)
        assert holds(adapters["c"], digest)
        c = apps["c"] = TtsApp(
            chatterbox_settings(settings, tmp_path, "c", require_consent=False), adapters={"chatterbox": adapters["c"]}
        )
        await c.start()
        erasure = c.service.erasure  # type: ignore[union-attr]
        await eventually(lambda: not holds(adapters["c"], digest), 5.0, explain=lambda: erasure.applied)

        with pytest.raises(TtsError) as gone:
            again = SynthesisRequest(text="Noch einmal bitte.", language="de", voice_profile=doomed["voice_profile"])
            await client.synthesize(again)
        assert gone.value.code.value == "unknown_voice"
        profiles = await nc.jetstream().object_store(settings.profiles_bucket)
        names = {info.name for info in await profiles.list(ignore_deletes=False)}
        assert doomed["voice_profile"] not in names, "the deleted profile's metadata (its transcript) is still there"
        assert await client.delete_voice(doomed["voice_profile"]) == {"deleted": False}
    finally:
        for app in apps.values():
            await app.stop()


@pytest.mark.usefixtures("findable_chatterbox")
async def test_an_instance_cut_off_during_the_delete_drops_the_conditioning_when_it_is_back(
    settings: Settings, tmp_path: Path, nats_url: str, client: TtsClient
) -> None:
    """b's NATS link is pulled (a TCP relay cut) while a deletes; once b reconnects, its erasure consumer catches up."""
    proxy = CuttableProxy(int(nats_url.rsplit(":", 1)[1]))
    adapter_b = ChatterboxBackend(chatterbox_settings(settings, tmp_path, "b", require_consent=False))
    a = TtsApp(chatterbox_settings(settings, tmp_path, "a", require_consent=False))
    b = TtsApp(
        chatterbox_settings(settings, tmp_path, "b", require_consent=False).with_(nats_url=await proxy.listen()),
        adapters={"chatterbox": adapter_b},
    )
    for app in (a, b):
        await app.start()
        await next_state(app, "chatterbox", State.LOADED)
    try:
        voice = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["voice_profile"]
        digest = (await a.service.profiles.get(voice)).digest  # type: ignore[union-attr]
        for n in range(40):  # the queue group spreads requests: until b has computed the conditioning
            await client.synthesize(SynthesisRequest(text=f"{TEXTS[n % 3]} {n}", language="de", voice_profile=voice))
            if holds(adapter_b, digest):
                break
        assert holds(adapter_b, digest)
        await proxy.cut()
        await eventually(lambda: b.nc is not None and not b.nc.is_connected, 5.0)
        assert await client.delete_voice(voice) == {"deleted": True}
        assert holds(adapter_b, digest), "b heard of it while cut off?"
        await proxy.listen()
        erasure = b.service.erasure  # type: ignore[union-attr]
        await eventually(lambda: not holds(adapter_b, digest), 30.0, explain=lambda: erasure.applied)
        print(f"\nb dropped the conditioning after reconnecting (erasures applied there: {erasure.applied})")
    finally:
        if proxy._server is not None and not proxy._server.is_serving():
            await proxy.listen()  # back, so that b stops as usual
        for app in (a, b):
            await app.stop()
