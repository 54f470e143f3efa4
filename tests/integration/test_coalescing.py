"""One synthesis for identical requests, on one instance and across two: real nats-server, real Piper.

The engine's work is read from ``tts_audio_seconds_total`` (it grows by what the engine spoke) and from the
actor's engine calls; the audio each caller got is compared byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from tests.support.audio_checks import decode
from tests.support.fleet import fleet_started
from tests.support.helpers import GatedPiper, eventually, serving, wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest

TEXT = "Everyone in the group gets the same sentence. It is spoken only once."
LONG = " ".join(f"Sentence {n} of a longer message goes out to every recipient at once." for n in range(1, 7))


def audio_seconds(backend: str = "piper") -> float:
    return REGISTRY.get_sample_value("tts_audio_seconds_total", {"backend": backend}) or 0.0


def engine_calls(app: TtsApp, backend: str = "piper") -> int:
    assert app.registry is not None
    return app.registry.actors[backend].engine_calls


async def test_ten_identical_requests_are_one_synthesis(piper_loaded: TtsApp, client: TtsClient) -> None:
    spoken, calls = audio_seconds(), engine_calls(piper_loaded)
    replies = await asyncio.gather(*(client.synthesize(SynthesisRequest(text=TEXT)) for _ in range(10)))
    assert len({r.audio for r in replies}) == 1 and wav_info(replies[0].audio).duration_s > 2
    outcomes = Counter(r.headers["Tts-Cache"] for r in replies)
    assert outcomes["miss"] == 1 and outcomes["joined"] + outcomes["hit"] == 9, outcomes
    assert engine_calls(piper_loaded) - calls == 2, "two segments, spoken once"
    one_reply = replies[0].duration_ms / 1000
    assert audio_seconds() - spoken == pytest.approx(one_reply, abs=0.05)
    assert len({r.request_id for r in replies}) == 10, "each caller keeps its own request id"


async def test_the_same_request_right_after_the_reply_is_not_synthesized_again(
    piper_loaded: TtsApp, client: TtsClient
) -> None:
    first = await client.synthesize(SynthesisRequest(text=TEXT))
    calls = engine_calls(piper_loaded)
    again = await client.synthesize(SynthesisRequest(text=TEXT))  # the store may still be in flight
    assert first.headers["Tts-Cache"] == "miss" and again.headers["Tts-Cache"] in ("hit", "joined")
    assert again.audio == first.audio and engine_calls(piper_loaded) == calls


async def test_a_streamed_joiner_gets_the_stream_from_where_it_is(piper_loaded: TtsApp, client: TtsClient) -> None:
    spoken = audio_seconds()
    leader = client.stream(SynthesisRequest(text=LONG))
    leader_chunks = []
    joiner_task: asyncio.Task | None = None
    async for chunk in leader:
        leader_chunks.append(chunk)
        if joiner_task is None:  # the leader's first audio is out: the rest of the text is still being spoken
            joiner_task = asyncio.create_task(_gather_stream(client, SynthesisRequest(text=LONG)))
            whole_task = asyncio.create_task(client.synthesize(SynthesisRequest(text=LONG)))
    assert joiner_task is not None
    joiner_headers, joiner_end, joiner_chunks = await joiner_task
    whole = await whole_task
    leader_audio = b"".join(c.data for c in leader_chunks)
    assert joiner_headers["Tts-Cache"] == "joined" and joiner_end["Tts-Cache"] == "joined"
    assert b"".join(c.data for c in joiner_chunks) == leader_audio, "the joiner's stream is the leader's"
    assert [c.index for c in joiner_chunks] == [c.index for c in leader_chunks]
    assert joiner_end["Tts-Timings"] == leader.end_headers["Tts-Timings"]
    assert whole.headers["Tts-Cache"] in ("joined", "hit")
    # the same samples, as one file (its header has the lengths, the stream's does not)
    assert np.array_equal(decode(whole.audio).samples, decode(leader_audio).samples)
    assert audio_seconds() - spoken == pytest.approx(whole.duration_ms / 1000, abs=0.05)


async def _gather_stream(client: TtsClient, request: SynthesisRequest) -> tuple[dict, dict, list]:
    stream = client.stream(request)
    chunks = [chunk async for chunk in stream]
    return dict(stream.headers), dict(stream.end_headers), chunks


async def test_cache_false_never_joins(piper_loaded: TtsApp, client: TtsClient) -> None:
    calls = engine_calls(piper_loaded)
    replies = await asyncio.gather(
        client.synthesize(SynthesisRequest(text=TEXT)),
        *(client.synthesize(SynthesisRequest(text=TEXT, cache=False)) for _ in range(2)),
    )
    assert [r.headers["Tts-Cache"] for r in replies] == ["miss", "bypass", "bypass"]
    assert engine_calls(piper_loaded) - calls == 6, "three syntheses of two segments"


async def test_two_instances_synthesize_it_once(settings: Settings, tmp_path: Path, nc: Client) -> None:
    a = TtsApp(settings.with_(instance="a", backends=("piper",), cache_dir=tmp_path / "a"))
    b = TtsApp(settings.with_(instance="b", backends=("piper",), cache_dir=tmp_path / "b", subject_prefix="tb"))
    async with fleet_started(a, b):
        on_a, on_b = TtsClient(nc, timeout_s=60, retry_policy=None), TtsClient(nc, prefix="tb", timeout_s=60)
        spoken, calls = audio_seconds(), engine_calls(a) + engine_calls(b)
        requests = [(on_a if n % 2 else on_b).synthesize(SynthesisRequest(text=TEXT)) for n in range(10)]
        requests.append(on_b.synthesize(SynthesisRequest(text=TEXT, stream=True)))  # a stream joins too
        replies = await asyncio.gather(*requests)
        assert len({r.audio[44:] for r in replies}) == 1, "the same samples for all (a stream's header differs)"
        outcomes = Counter(r.headers["Tts-Cache"] for r in replies)
        assert outcomes["miss"] == 1 and outcomes["joined"] + outcomes["hit"] == 10, outcomes
        assert engine_calls(a) + engine_calls(b) - calls == 2
        assert audio_seconds() - spoken == pytest.approx(replies[0].duration_ms / 1000, abs=0.05)


async def test_a_joiner_waits_no_longer_than_its_own_deadline(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    async with serving(settings, gated) as (_, actor):
        gated.synth_gate.clear()
        request = SynthesisRequest(text=TEXT, backend="gated")
        leader = asyncio.create_task(client.synthesize(request))
        assert await asyncio.to_thread(gated.synth_started.wait, 30)
        patient = asyncio.create_task(client.synthesize(request))
        began = time.monotonic()
        with pytest.raises(TtsError) as hurried:
            await client.synthesize(dataclasses.replace(request, deadline_ms=300))
        assert hurried.value.code is ErrorCode.SYNTHESIS_TIMEOUT and time.monotonic() - began < 5
        assert not leader.done() and not patient.done()
        gated.synth_gate.set()
        first, second = await asyncio.gather(leader, patient)
        assert first.audio == second.audio and second.headers["Tts-Cache"] == "joined"
        assert actor.engine_calls == 2


async def test_the_holders_instance_stops_mid_synthesis_and_the_joiners_synthesize(
    settings: Settings, tmp_path: Path, nc: Client
) -> None:
    """``a`` holds the claim with its engine held at a gate; ``a`` stops; ``b``'s waiters take over."""
    gated_a, gated_b = GatedPiper(settings), GatedPiper(settings)
    gated_a.load_gate.set()
    gated_b.load_gate.set()
    a = TtsApp(
        settings.with_(instance="a", backends=("gated",), cache_dir=tmp_path / "a", shutdown_grace_s=0.5),
        adapters={"gated": gated_a},
    )
    b = TtsApp(
        settings.with_(instance="b", backends=("gated",), cache_dir=tmp_path / "b", subject_prefix="tb"),
        adapters={"gated": gated_b},
    )
    request = SynthesisRequest(text=TEXT, backend="gated")
    async with fleet_started(a, b):
        gated_a.synth_gate.clear()
        held = asyncio.create_task(TtsClient(nc, timeout_s=60, retry_policy=None).synthesize(request))
        assert await asyncio.to_thread(gated_a.synth_started.wait, 30)
        on_b = TtsClient(nc, prefix="tb", timeout_s=60, retry_policy=None)
        waiting = [asyncio.create_task(on_b.synthesize(request)) for _ in range(5)]
        coalescer = b.service.cached.coalescer  # type: ignore[union-attr]
        await eventually(lambda: len(coalescer.flights) == 1, timeout_s=10)  # b's leader waits on a's claim
        calls_b = engine_calls(b, "gated")
        assert calls_b == 0 and not any(task.done() for task in waiting), "b synthesized while a held the claim"
        stopping = asyncio.create_task(a.stop())
        try:
            replies = await asyncio.wait_for(asyncio.gather(*waiting), 60)
        finally:
            gated_a.synth_gate.set()
            await stopping
        assert len({r.audio for r in replies}) == 1 and wav_info(replies[0].audio).duration_s > 2
        assert Counter(r.headers["Tts-Cache"] for r in replies)["miss"] == 1
        assert engine_calls(b, "gated") - calls_b == 2, "b spoke it once for its five callers"
        with contextlib.suppress(TtsError):  # a's own caller: a shutdown error, or the audio in time
            await held
