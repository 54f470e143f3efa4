"""The audio cache in the synthesis path: real nats-server, real JetStream object store, the real Piper voice."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from tests.support.helpers import eventually, wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.synthesis.audio_cache import AudioCache
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

TEXT = "The cache keeps this sentence. And this one too."


def piper_calls(app: TtsApp) -> int:
    assert app.registry is not None
    return app.registry.actors["piper"].engine_calls


async def stored(app: TtsApp) -> None:
    """The background put has finished (the reply never waits for it)."""
    assert app.service is not None
    await app.service.cached.drain(10)


async def test_a_miss_then_a_hit_with_the_same_bytes_and_no_backend(piper_loaded: TtsApp, client: TtsClient) -> None:
    request = SynthesisRequest(text=TEXT)
    first = await client.synthesize(request)
    assert first.headers["Tts-Cache"] == "miss"
    await stored(piper_loaded)
    calls = piper_calls(piper_loaded)
    second = await client.synthesize(request)
    assert second.headers["Tts-Cache"] == "hit"
    assert second.audio == first.audio
    assert piper_calls(piper_loaded) == calls, "a hit reached the backend"
    info = wav_info(second.audio)
    assert info.duration_s > 1.5 and second.timings == first.timings and len(second.timings) == 2
    assert second.request_id and second.request_id != first.request_id
    # the same text with other white space is the same audio; another format is not
    assert (await client.synthesize(SynthesisRequest(text=f"  {TEXT}\n"))).headers["Tts-Cache"] == "hit"
    assert (await client.synthesize(SynthesisRequest(text=TEXT, format=AudioFormat.FLAC))).headers[
        "Tts-Cache"
    ] == "miss"


async def test_a_streamed_hit_is_one_file_and_a_streamed_miss_is_cached_whole(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    streamed = await client.synthesize(SynthesisRequest(text=TEXT, stream=True))
    assert streamed.headers["Tts-Cache"] == "miss"
    await stored(piper_loaded)
    calls = piper_calls(piper_loaded)
    whole = await client.synthesize(SynthesisRequest(text=TEXT))
    assert whole.headers["Tts-Cache"] == "hit"
    data_starts = whole.audio.index(b"data") + 8  # after the header and its LIST/INFO chunk (the synthetic mark)
    assert wav_info(whole.audio).frames == (len(whole.audio) - data_starts) // 2, (
        "the cached stream kept its open length"
    )

    stream = client.stream(SynthesisRequest(text=TEXT))
    chunks = [chunk async for chunk in stream]
    assert piper_calls(piper_loaded) == calls
    assert stream.headers["Tts-Cache"] == "hit" and stream.end_headers["Tts-Cache"] == "hit"
    assert b"".join(c.data for c in chunks) == whole.audio
    assert int(stream.end_headers["Tts-Total-Bytes"]) == len(whole.audio)
    assert stream.timings == whole.timings and all(c.index >= 0 for c in chunks)
    assert wav_info(b"".join(c.data for c in chunks)).duration_s == pytest.approx(
        int(whole.headers["Tts-Duration-Ms"]) / 1000, abs=0.01
    )


async def test_cache_false_bypasses_it(piper_loaded: TtsApp, client: TtsClient) -> None:
    request = SynthesisRequest(text=TEXT, cache=False)
    calls = piper_calls(piper_loaded)
    for _ in range(2):
        reply = await client.synthesize(request)
        assert reply.headers["Tts-Cache"] == "bypass"
        await stored(piper_loaded)
    assert piper_calls(piper_loaded) == calls + 4  # two segments, twice
    assert (await client.synthesize(SynthesisRequest(text=TEXT))).headers["Tts-Cache"] == "miss", "a bypass stored"


async def test_entries_expire_after_the_ttl(settings: Settings, client: TtsClient) -> None:
    app = TtsApp(settings.with_(backends=("piper",), audio_cache_ttl_s=1.0))
    await app.start()
    try:
        assert app.registry is not None
        assert (await app.registry.actors["piper"].wait_settled(30)).value == "loaded"
        request = SynthesisRequest(text="Soon forgotten.")
        assert (await client.synthesize(request)).headers["Tts-Cache"] == "miss"
        await stored(app)
        assert (await client.synthesize(request)).headers["Tts-Cache"] == "hit"
        assert app.service is not None
        route = app.registry.route(request)
        mark = app.service.pipeline.marking.name_for(route.actor.adapter.spec)  # the key names the watermark
        cache, key = app.service.cached.cache, app.service.cached.key(request, route, mark)

        async def aged_out() -> bool:  # the server ages the entry out on its own clock
            return await cache.get(key) is None

        await eventually(aged_out, timeout_s=15, interval_s=0.2, explain=lambda: "the entry outlived its TTL")
        calls = piper_calls(app)
        assert (await client.synthesize(request)).headers["Tts-Cache"] == "miss"
        assert piper_calls(app) == calls + 1
    finally:
        await app.stop()


async def test_a_deleted_bucket_degrades_to_synthesis(
    piper_loaded: TtsApp, client: TtsClient, nc: Client, settings: Settings
) -> None:
    request = SynthesisRequest(text=TEXT)
    first = await client.synthesize(request)
    await stored(piper_loaded)
    await nc.jetstream().delete_object_store(settings.audio_cache_bucket)
    calls = piper_calls(piper_loaded)
    again = await client.synthesize(request)
    assert again.headers["Tts-Cache"] == "miss"
    assert wav_info(again.audio).duration_s == pytest.approx(wav_info(first.audio).duration_s, abs=0.3)
    assert piper_calls(piper_loaded) > calls
    await stored(piper_loaded)  # the put made the bucket again
    service, route = piper_loaded.service, piper_loaded.registry.route(request)  # type: ignore[union-attr]
    mark = service.pipeline.marking.name_for(route.actor.adapter.spec)  # type: ignore[union-attr]
    assert await AudioCache(nc, settings).get(service.cached.key(request, route, mark)) is not None  # type: ignore
    assert (await client.synthesize(request)).headers["Tts-Cache"] == "hit"
