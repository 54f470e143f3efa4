"""Formats, streams, timings, cancel and deadlines end to end: a real nats-server and the real Piper voice."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
import time
import uuid

import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import REGISTRY

from tests.support.audio_checks import decode
from tests.support.helpers import GatedPiper, eventually, serving
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import text_cost
from tts_actor.backends.base import Voice
from tts_actor.client.queries import CANCEL_WAIT_S
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

THREE = "The first sentence is short. The second one is a little longer than the first. Third!"
TEN = " ".join(f"Sentence number {n} tells the listener one more small thing about the weather." for n in range(10))


def priming_ms(fmt: AudioFormat, rate: int) -> float:
    return 1024 / rate * 1000 if fmt is AudioFormat.AAC else 0.0


def tolerance_ms(fmt: AudioFormat, rate: int) -> float:
    """AAC's last frame plays whole (ADTS cannot say otherwise; FFmpeg ignores an MP4 edit list's end)."""
    return max(30.0, 1024 / rate * 1000) if fmt in (AudioFormat.AAC, AudioFormat.M4A) else 30.0


async def raw_stream(nc: Client, body: dict, request_id: str | None = None, wait_s: float = 60) -> list:
    """Every message of a streamed reply, up to and including the empty end message."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    headers = {"Tts-Request-Id": request_id} if request_id else None
    await nc.publish("tts.synthesize", json.dumps({**body, "stream": True}).encode(), reply=inbox, headers=headers)
    messages = []
    while True:
        msg = await sub.next_msg(timeout=wait_s)
        messages.append(msg)
        if not msg.data:
            break
    await sub.unsubscribe()
    return messages


def gauge(name: str, backend: str) -> float:
    return REGISTRY.get_sample_value(name, {"backend": backend}) or 0.0


@pytest.mark.parametrize("fmt", list(AudioFormat))
async def test_every_format_decodes_to_the_reply_duration_with_timings(
    piper_loaded: TtsApp, client: TtsClient, fmt: AudioFormat
) -> None:
    reply = await client.synthesize(SynthesisRequest(text=THREE, format=fmt))
    assert reply.content_type.startswith(fmt.content_type)
    timings = reply.timings
    assert [t["index"] for t in timings] == [0, 1, 2]
    assert [THREE[t["text_start"] : t["text_end"]] for t in timings] == [
        "The first sentence is short.",
        "The second one is a little longer than the first.",
        "Third!",
    ]
    for before, after in itertools.pairwise(timings):  # 150 ms of silence between segments
        assert 0 <= before["start_ms"] < before["end_ms"] and after["start_ms"] - before["end_ms"] in (149, 150, 151)
    assert abs(timings[-1]["end_ms"] - reply.duration_ms) <= 1
    if fmt is AudioFormat.PCM:
        assert reply.content_type == "audio/L16;rate=22050;channels=1"
        samples = len(reply.audio) // 2
        assert abs(samples / 22.05 - reply.duration_ms) <= 1
        return
    decoded = decode(reply.audio)
    late = decoded.duration_ms - reply.duration_ms - priming_ms(fmt, decoded.rate)
    assert abs(late) <= tolerance_ms(fmt, decoded.rate), f"{fmt}: {late:+.1f} ms"


async def test_resampled_and_bitrate_replies(piper_loaded: TtsApp, client: TtsClient) -> None:
    reply = await client.synthesize(SynthesisRequest(text=THREE, format=AudioFormat.MP3, sample_rate=16000))
    assert reply.sample_rate == 16000 and decode(reply.audio).rate == 16000
    small = await client.synthesize(SynthesisRequest(text=THREE, format=AudioFormat.OPUS, bitrate=12000))
    default = await client.synthesize(SynthesisRequest(text=THREE, format=AudioFormat.OPUS))
    assert len(small.audio) < len(default.audio) * 0.6
    # the voice-message default: about 32 kbit/s
    kbits = len(default.audio) * 8 / default.duration_ms
    assert 20 < kbits < 45, kbits


@pytest.mark.parametrize(
    "fmt", [AudioFormat.OPUS, AudioFormat.MP3, AudioFormat.WAV, AudioFormat.FLAC, AudioFormat.M4A, AudioFormat.WEBM]
)
async def test_a_stream_is_ordered_complete_and_one_valid_file(
    piper_loaded: TtsApp, client: TtsClient, nc: Client, fmt: AudioFormat
) -> None:
    chunks = client.stream(SynthesisRequest(text=THREE, format=fmt))
    received = [chunk async for chunk in chunks]
    assert [c.index for c in received] == sorted(c.index for c in received)
    assert {c.index for c in received} == {0, 1, 2}
    assert chunks.content_type == fmt.content_type and chunks.headers["Tts-Backend"] == "piper"
    assert chunks.request_id and chunks.headers["Tts-Request-Id"] == chunks.request_id
    end = chunks.end_headers
    assert int(end["Tts-Total-Bytes"]) == sum(len(c.data) for c in received)
    assert [t["index"] for t in chunks.timings] == [0, 1, 2]
    for chunk in received:  # one or more messages per segment (the first segment's head goes out first)
        timing = chunks.timings[chunk.index]
        assert (chunk.start_ms, chunk.end_ms) == (timing["start_ms"], timing["end_ms"])
    decoded = decode(b"".join(c.data for c in received))
    late = decoded.duration_ms - int(end["Tts-Duration-Ms"])
    longest = 2 * 1152 / decoded.rate * 1000 if fmt is AudioFormat.MP3 else tolerance_ms(fmt, decoded.rate)
    assert -30 <= late <= longest, f"{fmt}: {late:+.1f} ms"
    # on the wire: audio messages, then one empty end message (ADR-47), none over max_payload
    messages = await raw_stream(nc, {"text": THREE, "format": fmt.value})
    assert all(m.data for m in messages[:-1]) and messages[-1].data == b""
    assert messages[-1].headers["Tts-Stream-End"] == "1" and json.loads(messages[-1].headers["Tts-Timings"])
    assert "Content-Type" in messages[0].headers and "Tts-Request-Id" in messages[0].headers


async def test_a_segment_larger_than_max_payload_goes_in_several_messages(piper_loaded: TtsApp, nc: Client) -> None:
    sentence = " ".join(["the long unpunctuated sentence keeps going and going"] * 3)  # one segment, ~20 s slow
    body = {"text": sentence, "format": "wav", "sample_rate": 48000, "options": {"speed": 0.5}}
    messages = await raw_stream(nc, body)
    audio = messages[:-1]
    assert len(audio) >= 2 and {m.headers["Tts-Segment-Index"] for m in audio} == {"0"}
    assert all(len(m.data) + sum(len(k) + len(v) for k, v in m.headers.items()) < nc.max_payload for m in messages)
    decoded = decode(b"".join(m.data for m in audio))
    assert decoded.rate == 48000
    assert abs(decoded.duration_ms - int(messages[-1].headers["Tts-Duration-Ms"])) <= 30


async def test_a_5000_character_text_streams_through_a_stock_1mib_server(
    piper_loaded: TtsApp, client: TtsClient, nc: Client
) -> None:
    assert nc.max_payload == 1024 * 1024  # the test server runs with the stock limit
    text = (TEN + " ") * 7
    text = text[: 5000 - 1].rsplit(" ", 1)[0] + "."
    received = []
    async with client.stream(SynthesisRequest(text=text, format=AudioFormat.WAV), timeout_s=120) as chunks:
        async for chunk in chunks:
            assert len(chunk.data) < nc.max_payload
            received.append(chunk)
    assert received[-1].index == int(chunks.end_headers["Tts-Segment-Count"]) - 1 == len(chunks.timings) - 1
    decoded = decode(b"".join(c.data for c in received))
    assert abs(decoded.duration_ms - int(chunks.end_headers["Tts-Duration-Ms"])) <= 1
    assert decoded.duration_ms > 120_000


class Recording(GatedPiper):
    """Real Piper with a small segment limit, recording what each engine call receives."""

    def __init__(self, settings: Settings, limit: int = 40, fail_on_call: int | None = None) -> None:
        super().__init__(settings)
        self.spec = dataclasses.replace(self.spec, max_segment_chars=limit)
        self.received: list[str] = []
        self.fail_on_call = fail_on_call
        self.hold_from_call: int | None = None
        self.hold = threading.Event()

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.received.append(request.text)
        if self.fail_on_call == len(self.received):
            raise RuntimeError("engine stand-in fails on this call")
        if self.hold_from_call is not None and len(self.received) >= self.hold_from_call:
            self.synth_started.set()
            if not self.hold.wait(30):
                raise TimeoutError("test gate never opened")
        return super().synthesize(request, voice)


async def test_an_engine_never_receives_more_than_its_limit(settings: Settings, client: TtsClient) -> None:
    engine = Recording(settings, limit=40)
    text = (
        "This opening sentence is comfortably longer than forty characters, with a comma. "
        "then an unpunctuated run of words that goes on and on without any stop at all for a while "
        "Short one."
    )
    async with serving(settings, engine):
        reply = await client.synthesize(SynthesisRequest(text=text, backend="gated"))
    assert len(engine.received) >= 5 and all(text_cost(t) <= 40 for t in engine.received)
    assert " ".join(engine.received).split() == text.split()
    assert len(reply.timings) == len(engine.received)


async def test_an_error_part_way_arrives_as_the_structured_error_then_the_end(
    settings: Settings, client: TtsClient, nc: Client
) -> None:
    engine = Recording(settings, limit=400, fail_on_call=2)
    async with serving(settings, engine) as (_, actor):
        received = []
        with pytest.raises(TtsError) as info:
            async for chunk in client.stream(SynthesisRequest(text=THREE, backend="gated", format=AudioFormat.OPUS)):
                received.append(chunk)
        assert received[0].data.startswith(b"OggS") and {c.index for c in received} == {0}
        assert info.value.code is ErrorCode.SYNTHESIS_FAILED and "stand-in" in info.value.message
        engine.received.clear()
        messages = await raw_stream(nc, {"text": THREE, "backend": "gated"})
        error, end = messages[-2:]
        assert all(m.data and m.headers["Tts-Segment-Index"] == "0" for m in messages[:-2])
        assert error.headers["Tts-Error-Code"] == "synthesis_failed" and json.loads(error.data)["error"]
        assert end.data == b"" and end.headers["Tts-Stream-End"] == "1"
        assert actor.ready  # the service goes on
        assert (await client.synthesize(SynthesisRequest(text="Still here.", backend="gated"))).audio


async def test_cancel_ends_the_stream_at_once_and_the_engine_stops_at_the_next_segment(
    settings: Settings, client: TtsClient, nc: Client
) -> None:
    engine = Recording(settings, limit=400)
    engine.hold_from_call = 2  # the second engine call waits on the test
    async with serving(settings, engine) as (_, actor):
        request_id = uuid.uuid4().hex
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        body = {"text": TEN, "backend": "gated", "stream": True}
        await nc.publish(
            "tts.synthesize", json.dumps(body).encode(), reply=inbox, headers={"Tts-Request-Id": request_id}
        )
        first = await sub.next_msg(timeout=30)
        assert first.headers["Tts-Request-Id"] == request_id and first.headers["Tts-Segment-Index"] == "0"
        # the second call is inside the engine, held (synth_started is set by the first call already: waiting on it
        # raced the rest of segment 0, which now takes its watermark before the second call may start)
        await eventually(lambda: len(engine.received) >= 2)
        await nc.publish("tts.cancel", json.dumps({"request_id": request_id}).encode())
        error = await sub.next_msg(timeout=10)  # while the engine is still held
        while "Tts-Error-Code" not in error.headers:  # the rest of the first segment
            assert error.headers["Tts-Segment-Index"] == "0"
            error = await sub.next_msg(timeout=10)
        assert error.headers["Tts-Error-Code"] == "cancelled"
        end = await sub.next_msg(timeout=10)
        assert end.data == b"" and end.headers["Tts-Stream-End"] == "1"
        engine.hold.set()
        await eventually(lambda: not actor.busy)
        assert len(engine.received) == 2  # no segment after the cancel reached the engine
        # the client's side: leaving a stream early cancels it the same way
        engine.received.clear()
        engine.hold.clear()
        engine.synth_started.clear()
        async with client.stream(SynthesisRequest(text=TEN, backend="gated")) as chunks:
            async for _ in chunks:
                break
        engine.hold.set()  # the cancel may have come before or during the second engine call, not after
        await eventually(lambda: not actor.busy)
        assert len(engine.received) in (1, 2)
        assert (await client.synthesize(SynthesisRequest(text="Free again.", backend="gated"))).audio


async def test_cancel_answers_for_a_request_in_flight_and_promptly_for_an_unknown_one(
    settings: Settings, client: TtsClient
) -> None:
    engine = Recording(settings, limit=400)
    engine.hold_from_call = 2  # the request stays in flight while the test cancels it
    async with serving(settings, engine) as (_, actor):
        async with client.stream(SynthesisRequest(text=TEN, backend="gated")) as chunks:
            await chunks.__anext__()
            answer = await client.cancel(chunks.request_id)
            assert answer == {"ok": True, "request_id": chunks.request_id, "instance": settings.instance}
            with pytest.raises(TtsError) as info:
                async for chunk in chunks:
                    assert chunk.index == 0  # the rest of the first segment, out before the cancel
            assert info.value.code is ErrorCode.CANCELLED
        engine.hold.set()
        await eventually(lambda: not actor.busy)
        started = time.monotonic()
        answer = await client.cancel(chunks.request_id)  # finished: no instance has it any more
        assert answer == {"ok": False, "request_id": chunks.request_id, "error": "not found on any instance"}
        assert time.monotonic() - started < CANCEL_WAIT_S + 0.5
    assert (await client.cancel("nobody-listens"))["ok"] is False  # no instance at all: the same answer


async def test_a_deadline_stops_work_at_the_next_segment(settings: Settings, client: TtsClient) -> None:
    engine = Recording(settings, limit=400)
    engine.hold_from_call = 1
    async with serving(settings, engine) as (_, actor):
        reply = asyncio.create_task(
            client.synthesize(SynthesisRequest(text=TEN, backend="gated", deadline_ms=200, format=AudioFormat.MP3))
        )
        await asyncio.to_thread(engine.synth_started.wait, 10)
        await asyncio.sleep(0.4)  # past the deadline while the first segment is in the engine
        engine.hold.set()
        with pytest.raises(TtsError) as info:
            await reply
        assert info.value.code is ErrorCode.SYNTHESIS_TIMEOUT and "deadline_ms=200" in info.value.message
        await eventually(lambda: not actor.busy)
        assert len(engine.received) == 1


async def test_spans_and_first_audio_metric(piper_loaded: TtsApp, client: TtsClient, spans) -> None:
    spans.clear()
    observed = gauge("tts_first_audio_seconds_count", "piper")
    async with client.stream(SynthesisRequest(text=THREE, format=AudioFormat.OPUS)) as chunks:
        [chunk async for chunk in chunks]
    assert gauge("tts_first_audio_seconds_count", "piper") == observed + 1
    await eventually(lambda: any(s.name == "tts.synthesize" for s in spans.get_finished_spans()))
    finished = spans.get_finished_spans()
    (parent,) = [s for s in finished if s.name == "tts.synthesize"]
    children = [s for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id]
    names = [s.name for s in children]
    assert names.count("tts.queue_wait") == 1
    assert names.count("tts.segment") == 3 and names.count("tts.encode") == 3
    assert parent.attributes["tts.segments"] == 3 and parent.attributes["tts.stream"] is True


async def test_a_stream_refused_at_once_still_gets_its_end_message(piper_loaded: TtsApp, nc: Client) -> None:
    messages = await raw_stream(nc, {"text": "Hello.", "backend": "xtts"})
    assert [bool(m.data) for m in messages] == [True, False]
    assert messages[0].headers["Tts-Error-Code"] == "backend_failed"
    assert messages[1].headers["Tts-Stream-End"] == "1"
    with pytest.raises(NatsTimeoutError):  # nobody serves that id: nobody answers
        await nc.request("tts.cancel", json.dumps({"request_id": "nobody-has-it"}).encode(), timeout=0.3)
