"""The watermark through the running service: Piper's replies carry it, ``tts.detect`` finds it, bad files are refused.

A real nats-server, real Piper (joe), the real PerthNet weights from the resemble-perth wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.backends import isolated_settings, running_service
from tests.support.helpers import raw_request
from tests.support.speech import speak
from tts_actor.app import TtsApp
from tts_actor.audio.codecs import encode_whole
from tts_actor.client.tts_client import TtsClient
from tts_actor.synthesis.marking import Marking
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

TEXT = "Every reply from this voice carries a mark that nobody can hear. The second sentence has it too."


async def test_piper_replies_carry_the_mark_and_tts_detect_finds_it(piper_loaded: TtsApp, client: TtsClient) -> None:
    for fmt in (AudioFormat.WAV, AudioFormat.OPUS, AudioFormat.MP3):
        reply = await client.synthesize(SynthesisRequest(text=TEXT, format=fmt, cache=False))
        assert reply.headers["Tts-Watermark"] == "perth", fmt
        found = await client.detect(reply.audio)
        assert found["watermarked"] is True and found["confidence"] > 0.8, (fmt, found)
        assert abs(found["seconds"] * 1000 - reply.duration_ms) < 100
    streamed = b""
    async with client.stream(SynthesisRequest(text=TEXT, format=AudioFormat.OPUS, cache=False)) as chunks:
        async for chunk in chunks:
            streamed += chunk.data
    assert (await client.detect(streamed))["watermarked"] is True  # marked segment by segment, before the split
    unmarked = encode_whole("opus", speak(TEXT).pcm, 22050)  # Piper straight, not through the service
    found = await client.detect(unmarked)
    assert found["watermarked"] is False and found["confidence"] < 0.2


async def test_off_leaves_the_audio_unmarked_and_detect_refuses_what_is_not_one_audio_file(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",), watermark="off", max_request_bytes=64 * 1024)
    async with running_service(tmp_path, settings) as (app, client):
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        reply = await client.synthesize(SynthesisRequest(text="Not marked.", format=AudioFormat.WAV, cache=False))
        assert "Tts-Watermark" not in reply.headers
        assert (await client.detect(reply.audio))["watermarked"] is False  # detection works whatever the setting
        piper_straight = await client.detect(encode_whole("flac", speak("Straight from Piper.").pcm, 22050))
        assert piper_straight["watermarked"] is False
        for body, code, status in (
            (b"", "invalid_request", "400"),
            (b"\x00\x01 not audio" * 100, "invalid_request", "400"),
            (b"RIFF" + bytes(70 * 1024), "payload_too_large", "413"),
        ):
            headers, data = await raw_request(client.nc, body, "tts.detect")
            error = json.loads(data)["error"]
            assert headers["Tts-Error-Code"] == code and headers["Nats-Service-Error-Code"] == status, error
            assert error["fix"], error
        assert (await client.status())["instance"] == "test"  # still serving


async def test_the_audio_cache_keeps_marked_and_unmarked_audio_apart(piper_loaded: TtsApp, client: TtsClient) -> None:
    assert piper_loaded.service is not None
    request = SynthesisRequest(text="Cached with its mark.", format=AudioFormat.OPUS)
    assert (await client.synthesize(request)).headers["Tts-Cache"] == "miss"
    await piper_loaded.service.cached.drain(10)
    hit = await client.synthesize(request)
    assert hit.headers["Tts-Cache"] == "hit" and hit.headers["Tts-Watermark"] == "perth"
    piper_loaded.service.pipeline.marking = Marking("off")  # as an instance started with TTS_WATERMARK=off
    unmarked = await client.synthesize(request)
    assert unmarked.headers["Tts-Cache"] == "miss" and "Tts-Watermark" not in unmarked.headers
    assert (await client.detect(unmarked.audio))["watermarked"] is False
