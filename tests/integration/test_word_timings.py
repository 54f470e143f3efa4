"""Word timings end to end: a real nats-server, the real Piper voice with its phoneme alignments, the audio cache."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from pathlib import Path
from typing import Any

import nats
import numpy as np

from tests.support.audio_checks import decode
from tests.support.fleet import piper_loaded_on_a_only
from tests.support.speech_bounds import speech_bounds_ms
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.wire.messages import AudioFormat, SynthesisRequest, Timings

PLAIN = "The quick brown fox jumps over the lazy dog."
NUMBERS = "Meet me at 9:30 on 3 May, said Dr. Smith."
TWO = "The first sentence is short. Then a second one follows it, a little longer than the first."


def words_of(timings: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [word for entry in timings for word in entry["words"]]


def assert_in_order(timings: list[dict[str, Any]]) -> None:
    """Times that never go back, each word inside its segment, spans in text order."""
    for entry in timings:
        for word in entry["words"]:
            assert entry["start_ms"] <= word["start_ms"] <= word["end_ms"] <= entry["end_ms"], (entry, word)
            assert entry["text_start"] <= word["text_start"] < word["text_end"] <= entry["text_end"]
    for before, after in itertools.pairwise(words_of(timings)):
        assert before["end_ms"] <= after["start_ms"] and before["text_end"] <= after["text_start"], (before, after)


async def test_a_plain_sentence_has_one_entry_per_word_where_the_speech_is(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    reply = await client.synthesize(SynthesisRequest(text=PLAIN, timings=Timings.WORD, cache=False))
    words = words_of(reply.timings)
    assert [PLAIN[w["text_start"] : w["text_end"]] for w in words] == PLAIN.rstrip(".").split()
    assert all(w["end_ms"] > w["start_ms"] for w in words), words
    assert_in_order(reply.timings)
    assert "words" not in reply.headers["Tts-Timings"], "the header stays per segment; words come in the parts"
    decoded = decode(reply.audio)
    onset, offset = speech_bounds_ms(decoded.samples, decoded.rate)
    assert abs(words[0]["start_ms"] - onset) <= 150, (words[0], onset)
    assert abs(words[-1]["end_ms"] - offset) <= 200, (words[-1], offset)


async def test_numbers_and_abbreviations_map_without_losing_or_inventing_words(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    reply = await client.synthesize(SynthesisRequest(text=NUMBERS, timings=Timings.WORD, cache=False))
    words = words_of(reply.timings)
    spans = [NUMBERS[w["text_start"] : w["text_end"]] for w in words]
    assert spans == ["Meet", "me", "at", "9:30", "on", "3", "May", "said", "Dr", "Smith"]
    assert all(w["end_ms"] > w["start_ms"] for w in words), words  # every word has sound of its own
    assert_in_order(reply.timings)
    by_text = {NUMBERS[w["text_start"] : w["text_end"]]: w["end_ms"] - w["start_ms"] for w in words}
    assert by_text["9:30"] > by_text["at"], "nine thirty is two spoken words, longer than 'at'"


async def test_a_stream_carries_its_words_before_the_end_and_the_segments_split_them(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    stream = client.stream(SynthesisRequest(text=TWO, timings=Timings.WORD, format=AudioFormat.OPUS, cache=False))
    chunks = [chunk async for chunk in stream]
    assert chunks and stream.end_headers["Tts-Stream-End"] == "1"
    timings = stream.timings
    assert [t["index"] for t in timings] == [0, 1]
    assert [len(t["words"]) for t in timings] == [5, 12]
    assert_in_order(timings)
    assert timings[1]["words"][0]["start_ms"] >= timings[0]["end_ms"], "the second segment's words after the pause"


async def test_segment_timings_are_as_before_and_a_cached_reply_keeps_its_words(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    plain = await client.synthesize(SynthesisRequest(text=TWO))
    assert all("words" not in t and "timings_unavailable" not in t for t in plain.timings)
    assert plain.word_timings is None
    first = await client.synthesize(SynthesisRequest(text=TWO, timings=Timings.WORD))
    assert first.headers["Tts-Cache"] == "miss", "a reply without words does not stand in for one with them"
    assert piper_loaded.service is not None
    await piper_loaded.service.cached.drain(10)
    again = await client.synthesize(SynthesisRequest(text=TWO, timings=Timings.WORD))
    assert again.headers["Tts-Cache"] == "hit" and again.audio == first.audio
    assert again.timings == first.timings and len(words_of(again.timings)) == 17
    streamed = client.stream(SynthesisRequest(text=TWO, timings=Timings.WORD))
    assert [chunk async for chunk in streamed] and streamed.end_headers["Tts-Cache"] == "hit"
    assert streamed.timings == first.timings
    segments = await client.synthesize(SynthesisRequest(text=TWO))
    assert segments.headers["Tts-Cache"] == "hit" and segments.word_timings is None


async def test_identical_word_requests_share_one_synthesis_and_its_words(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    """Joiners of the same synthesis (a whole file, and a stream that follows the leader's) get its words too."""
    request = SynthesisRequest(text=TWO, timings=Timings.WORD)
    leader = client.stream(request)
    joined: list[asyncio.Task[Any]] = []
    async for _chunk in leader:
        if not joined:  # the leader's first audio is out: the rest is still being spoken
            joined = [asyncio.create_task(client.synthesize(request)) for _ in range(2)]
            joined.append(asyncio.create_task(client.synthesize(dataclasses.replace(request, stream=True))))
    replies = await asyncio.gather(*joined)
    assert leader.headers["Tts-Cache"] == "miss"
    assert {r.headers["Tts-Cache"] for r in replies} <= {"joined", "hit"}, [r.headers["Tts-Cache"] for r in replies]
    assert len(words_of(leader.timings)) == 17
    assert all(r.timings == leader.timings for r in replies)


async def test_word_timings_pass_through_the_hop_to_the_instance_with_the_model(
    settings: Settings, tmp_path: Path, client: TtsClient
) -> None:
    """``b``'s Piper failed, so what the queue group gives ``b`` is relayed from ``a``: the parts with it."""
    base = settings.with_(backends=("piper",), retry_max_attempts=0)
    async with piper_loaded_on_a_only(base, tmp_path) as (_a, b):
        routing = b.service.routing  # type: ignore[union-attr]
        for stream in (False, True):
            before = routing.forwarded
            for _ in range(40):  # the queue group picks the instance: until b took (and forwarded) one
                request = SynthesisRequest(text=PLAIN, timings=Timings.WORD, cache=False, stream=stream)
                reply = await client.synthesize(request)
                assert len(words_of(reply.timings)) == 9, reply.timings
                if routing.forwarded > before:
                    break
            assert routing.forwarded > before, "no request went through the hop"


async def test_a_reader_that_does_not_ask_for_words_skips_the_parts_as_status(
    piper_loaded: TtsApp, nats_url: str
) -> None:
    """The raw protocol: the parts are Tts-Status messages, their JSON put together in order."""
    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        request = SynthesisRequest(text=PLAIN, timings=Timings.WORD, cache=False)
        await nc.publish("tts.synthesize", request.to_json(), reply=inbox)
        statuses: list[str] = []
        while True:
            msg = await sub.next_msg(timeout=30)
            headers = msg.headers or {}
            if "Tts-Status" in headers:
                statuses.append(headers["Tts-Status"])
                if headers["Tts-Status"] == "timings":
                    assert headers["Tts-Timings-Part"] == "0/1" and headers["Content-Type"] == "application/json"
                continue
            assert msg.data[:4] == b"RIFF"
            break
        assert statuses.count("timings") == 1, statuses
    finally:
        await nc.close()


def test_speech_bounds_are_found_in_silence_and_tone() -> None:
    """The yardstick itself: 200 ms of silence, 500 ms of tone, 300 ms of silence at 16 kHz."""
    rate = 16000
    tone = (8000 * np.sin(np.arange(rate // 2) * 2 * np.pi * 220 / rate)).astype(np.int16)
    samples = np.concatenate([np.zeros(rate // 5, np.int16), tone, np.zeros(3 * rate // 10, np.int16)])
    assert speech_bounds_ms(samples, rate) == (200.0, 700.0)
