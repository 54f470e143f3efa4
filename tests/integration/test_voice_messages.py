"""Voice messages as chat apps play them, end to end on a real nats-server and the real Piper voice:
M4A and WebM whole and streamed, the waveform, and the synthetic-speech mark (headers and metadata)."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
from nats.aio.client import Client

from tests.support.audio_checks import Decoded, decode
from tts_actor.app import TtsApp
from tts_actor.audio.waveform import reduce_peaks
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

TEXT = "Your parcel arrives tomorrow morning. Please be at home between nine and noon."
NEW = [AudioFormat.M4A, AudioFormat.WEBM]


def late_bounds_ms(fmt: AudioFormat, rate: int) -> tuple[float, float]:
    """WebM trims exactly; an M4A's edit list skips the priming, and FFmpeg plays its last AAC frame whole."""
    return (-30.0, 1024 / rate * 1000 + 30) if fmt is AudioFormat.M4A else (-30.0, 30.0)


def envelope_correlation(waveform: bytes, decoded: Decoded, duration_ms: int) -> float:
    """Pearson correlation of the reply's waveform with the decoded audio's peaks over the same slices."""
    samples = np.abs(decoded.samples[: round(duration_ms * decoded.rate / 1000)].astype(np.int32))
    peaks = reduce_peaks(samples, len(waveform)).astype(np.float64)
    return float(np.corrcoef(np.frombuffer(waveform, np.uint8).astype(np.float64), peaks)[0, 1])


def comment(data: bytes) -> str:
    with av.open(io.BytesIO(data)) as container:
        tags = {**container.metadata, **container.streams.audio[0].metadata}
    return next((v for k, v in tags.items() if k.lower() == "comment"), "")


@pytest.mark.parametrize("fmt", NEW)
async def test_a_whole_reply_decodes_to_its_duration_with_waveform_and_mark(
    piper_loaded: TtsApp, client: TtsClient, fmt: AudioFormat
) -> None:
    reply = await client.synthesize(SynthesisRequest(text=TEXT, format=fmt, cache=False))
    assert reply.content_type == fmt.content_type and reply.synthetic
    decoded = decode(reply.audio)
    low, high = late_bounds_ms(fmt, decoded.rate)
    assert low <= decoded.duration_ms - reply.duration_ms <= high, decoded.duration_ms - reply.duration_ms
    assert reply.waveform is not None and len(reply.waveform) == 64
    assert envelope_correlation(reply.waveform, decoded, reply.duration_ms) > 0.9
    mark = comment(reply.audio)
    assert "AI-generated" in mark and "backend=piper" in mark and "tts-actor" in mark
    assert reply.headers["Tts-Voice"] in mark  # the model: the voice that spoke


@pytest.mark.parametrize("fmt", NEW)
async def test_a_stream_concatenates_into_one_file_and_its_end_carries_the_waveform(
    piper_loaded: TtsApp, client: TtsClient, fmt: AudioFormat
) -> None:
    stream = client.stream(SynthesisRequest(text=TEXT, format=fmt, cache=False, waveform_points=128))
    chunks = [chunk async for chunk in stream]
    assert {c.index for c in chunks} == {0, 1}
    assert stream.headers["Tts-Synthetic"] == "true" and stream.content_type == fmt.content_type
    data = b"".join(c.data for c in chunks)
    decoded = decode(data)
    duration_ms = int(stream.end_headers["Tts-Duration-Ms"])
    low, high = late_bounds_ms(fmt, decoded.rate)
    assert low <= decoded.duration_ms - duration_ms <= high
    assert stream.waveform is not None and len(stream.waveform) == 128
    assert envelope_correlation(stream.waveform, decoded, duration_ms) > 0.9
    assert "AI-generated" in comment(data)


async def test_a_cached_reply_carries_the_mark_and_the_same_waveform(piper_loaded: TtsApp, client: TtsClient) -> None:
    request = SynthesisRequest(text=TEXT, format=AudioFormat.WEBM)
    miss = await client.synthesize(request)
    assert piper_loaded.service is not None
    await piper_loaded.service.cached.drain(10)
    hit = await client.synthesize(request)
    assert (miss.headers["Tts-Cache"], hit.headers["Tts-Cache"]) == ("miss", "hit")
    assert hit.synthetic and hit.waveform == miss.waveform and hit.audio == miss.audio
    fewer = await client.synthesize(SynthesisRequest(text=TEXT, format=AudioFormat.WEBM, waveform_points=16))
    assert fewer.headers["Tts-Cache"] == "hit" and fewer.waveform is not None and len(fewer.waveform) == 16
    streamed = client.stream(request)
    async for _ in streamed:
        pass
    assert streamed.headers["Tts-Synthetic"] == "true" and streamed.waveform == miss.waveform


@pytest.mark.parametrize("points", [15, 257, "64", True])
async def test_waveform_points_out_of_range_is_refused(piper_loaded: TtsApp, nc: Client, points: object) -> None:
    msg = await nc.request("tts.synthesize", json.dumps({"text": TEXT, "waveform_points": points}).encode(), timeout=10)
    assert msg.headers["Tts-Error-Code"] == ErrorCode.INVALID_REQUEST.value
    assert "waveform_points" in json.loads(msg.data)["error"]["message"]


async def test_with_marking_off_the_files_carry_no_comment_and_replies_still_say_synthetic(
    settings: Settings, client: TtsClient
) -> None:
    app = TtsApp(settings.with_(mark_synthetic=False, backends=("piper",)))
    await app.start()
    try:
        assert app.registry is not None
        assert (await app.registry.actors["piper"].wait_settled(30)).value == "loaded"
        for fmt in (AudioFormat.WAV, AudioFormat.M4A, AudioFormat.WEBM, AudioFormat.MP3):
            reply = await client.synthesize(SynthesisRequest(text="Hello there.", format=fmt))
            assert reply.synthetic and b"AI-generated" not in reply.audio and comment(reply.audio) == ""
    finally:
        await app.stop()


async def test_an_unknown_format_names_the_new_ones(piper_loaded: TtsApp, nc: Client) -> None:
    msg = await nc.request("tts.synthesize", json.dumps({"text": TEXT, "format": "mp4"}).encode(), timeout=10)
    assert msg.headers["Tts-Error-Code"] == ErrorCode.UNKNOWN_FORMAT.value
    fix = json.loads(msg.data)["error"]["fix"]
    assert "m4a" in fix and "webm" in fix
