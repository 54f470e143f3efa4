"""The audio cache against a real nats-server: hit, miss, TTL expiry, a lost bucket, no server at all."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats
from nats.aio.client import Client
from prometheus_client import REGISTRY

from tests.support.backends import tone_wav
from tests.support.helpers import eventually
from tts_actor.config import Settings
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.synthesis.audio_cache import AudioCache, audio_cache_key, normalize_text

KEY_ARGS = dict(text="Hello there.", language="en", backend="piper", voice="en_US-joe-medium", audio_format="wav")


def test_the_key_changes_with_everything_that_changes_the_audio() -> None:
    base = audio_cache_key(**KEY_ARGS)
    assert base == audio_cache_key(**{**KEY_ARGS, "text": "  Hello\n there. "})  # same speech
    assert base == audio_cache_key(**KEY_ARGS, options={"speed": None})  # an unset option is no option
    changed = [
        audio_cache_key(**{**KEY_ARGS, "text": "Hello there!"}),
        audio_cache_key(**{**KEY_ARGS, "language": "de"}),
        audio_cache_key(**{**KEY_ARGS, "backend": "mms"}),
        audio_cache_key(**{**KEY_ARGS, "voice": "sha256-of-a-reference"}),
        audio_cache_key(**{**KEY_ARGS, "audio_format": "opus"}),
        audio_cache_key(**KEY_ARGS, options={"speed": 1.2}),
        audio_cache_key(**KEY_ARGS, sample_rate=16000),
        audio_cache_key(**KEY_ARGS, bitrate=32000),
        audio_cache_key(**KEY_ARGS, model_revision="abc123"),
        audio_cache_key(**KEY_ARGS, marked=False),  # TTS_MARK_SYNTHETIC=0: the file's metadata differs
    ]
    assert len({base, *changed}) == len(changed) + 1
    assert normalize_text("e\u0301  x") == "\u00e9 x"  # NFC: one way to write é


async def test_hit_and_miss(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings)
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.get(key) is None  # no bucket yet: a miss
    audio = tone_wav(3.0)  # bigger than one object-store chunk
    assert await cache.put(key, audio, {"Content-Type": "audio/wav", "Tts-Duration-Ms": "3000"})
    # another instance (its own connection) finds it
    other = await nats.connect(settings.nats_url or "", connect_timeout=2)
    try:
        hit = await AudioCache(other, settings).get(key)
    finally:
        await other.close()
    assert hit is not None
    assert hit.data == audio
    assert hit.headers == {"Content-Type": "audio/wav", "Tts-Duration-Ms": "3000"}
    assert await cache.get(audio_cache_key(**{**KEY_ARGS, "text": "Something else."})) is None


async def test_entries_expire_after_the_ttl(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings.with_(audio_cache_bucket="tts_audio_short", audio_cache_ttl_s=1.0))
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.put(key, b"RIFF-not-really-but-bytes")
    assert (await cache.get(key)) is not None
    info = await nc.jetstream().stream_info("OBJ_tts_audio_short")
    assert info.config.max_age == 1.0
    await asyncio.sleep(1.5)  # past the TTL: the server drops the entry
    assert await cache.get(key) is None


def writes(outcome: str) -> float:
    return REGISTRY.get_sample_value("tts_audio_cache_writes_total", {"outcome": outcome}) or 0.0


async def test_a_full_cache_refuses_puts_without_raising(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings.with_(audio_cache_bucket="tts_audio_small", audio_cache_max_bytes=1024 * 1024))
    first, second = audio_cache_key(**KEY_ARGS), audio_cache_key(**{**KEY_ARGS, "text": "Two."})
    failed_before = writes("failed")
    assert await cache.put(first, b"x" * 700_000)
    assert await cache.put(second, b"y" * 700_000) is False  # over the cap: refused, logged
    assert writes("failed") == failed_before + 1  # what the "audio cache writes failing" alert reads
    assert (await cache.get(first)) is not None  # what is there stays whole
    assert await cache.get(second) is None


async def test_a_lost_bucket_degrades_then_is_made_again(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings)
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.put(key, b"first")
    await nc.jetstream().delete_object_store(settings.audio_cache_bucket)
    assert await cache.get(key) is None  # a miss, not an error
    assert await cache.put(key, b"second")  # the bucket is made again
    hit = await cache.get(key)
    assert hit is not None and hit.data == b"second"


async def test_no_server_is_a_miss_and_a_dropped_put(tmp_path: Path, settings: Settings) -> None:
    server = EmbeddedNatsServer(tmp_path / "gone", port=-1)
    url = await asyncio.to_thread(server.start)

    async def quiet(exc: Exception) -> None:  # the reconnect attempts to the stopped server are expected
        pass

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=quiet)
    try:
        cache = AudioCache(nc, settings, timeout_s=0.5)
        key = audio_cache_key(**KEY_ARGS)
        assert await cache.put(key, b"cached")
        await asyncio.to_thread(server.stop)
        assert await cache.get(key) is None
        assert await cache.put(key, b"again") is False
    finally:
        with contextlib.suppress(ConnectionError):  # nats-py's close over a lost transport
            await nc.close()


async def test_a_hot_file_is_kept_in_memory_and_goes_when_another_instance_deletes_it(
    settings: Settings, nc: Client
) -> None:
    here = AudioCache(nc, settings)
    key = audio_cache_key(**KEY_ARGS)
    assert await here.put(key, tone_wav(1.0), {"Content-Type": "audio/wav"})
    assert key in here.memory  # the put keeps it: the next hit costs no round trip
    other_nc = await nats.connect(settings.nats_url or "", connect_timeout=2)
    try:
        there = AudioCache(other_nc, settings)
        assert (await there.get(key)) is not None and key in there.memory  # read once, then from memory
        assert await here.delete(key)  # what erasing a deleted voice's audio calls
        assert key not in here.memory
        await eventually(lambda: key not in there.memory, explain=lambda: "the other instance kept a deleted file")
        assert await there.get(key) is None and await here.get(key) is None
    finally:
        await other_nc.close()


async def test_invalidate_drops_only_this_instances_copy(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings)
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.put(key, b"RIFF-bytes", {"Content-Type": "audio/wav"})
    assert cache.invalidate(key) and key not in cache.memory
    hit = await cache.get(key)  # read from the object store again, and kept
    assert hit is not None and hit.data == b"RIFF-bytes" and key in cache.memory


async def test_a_deleted_bucket_empties_the_memory_of_every_instance(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings)
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.put(key, b"first")
    await nc.jetstream().delete_object_store(settings.audio_cache_bucket)
    await eventually(lambda: len(cache.memory) == 0, explain=lambda: "memory outlived the deleted bucket")
    assert await cache.get(key) is None


async def test_without_memory_every_hit_reads_the_store(settings: Settings, nc: Client) -> None:
    cache = AudioCache(nc, settings.with_(audio_cache_memory_bytes=0))
    key = audio_cache_key(**KEY_ARGS)
    assert await cache.put(key, b"bytes")
    assert len(cache.memory) == 0 and (await cache.get(key)) is not None and len(cache.memory) == 0
