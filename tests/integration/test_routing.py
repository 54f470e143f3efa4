"""Routing by interest: two instances on one real nats-server, Piper loaded on one only.

Instance ``a`` runs Piper for real. Instance ``b`` runs Piper too, but its voice file is
corrupt, so there Piper really fails to load (``corrupt_model``). Requests through the
shared ``tts.synthesize`` reach either instance; ``b`` forwards its share to
``tts.backend.piper.synthesize``, which only ``a`` subscribes while Piper is loaded there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from nats.aio.client import Client

from statemachine import Reason, State
from tests.support.audio_checks import decode
from tests.support.backends import next_state
from tests.support.fleet import piper_loaded_on_a_only
from tests.support.helpers import eventually
from tts_actor.app import TtsApp
from tts_actor.backends.base import BackendFailure
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

SUBJECT = "tts.backend.piper.synthesize"


def piper_on_a_only(
    settings: Settings, tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[tuple[TtsApp, TtsApp]]:
    base = settings.with_(backends=("piper",), retry_max_attempts=0, backend_queue_depth=32, max_inflight=64)
    return piper_loaded_on_a_only(base, tmp_path)


async def _no_responders(nc: Client, subject: str) -> bool:
    try:
        await nc.request(subject, b"{}", timeout=5)
    except Exception as exc:
        assert type(exc).__name__ in ("NoRespondersError", "TimeoutError"), repr(exc)
        return type(exc).__name__ == "NoRespondersError"
    return False


async def test_every_request_answered_with_audio_through_the_hop(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (a, b):
        assert a.service.routing.subscribed == {"piper"}  # type: ignore[union-attr]
        assert b.service.routing.subscribed == frozenset()  # type: ignore[union-attr]
        requests = [SynthesisRequest(text=f"Request number {n} goes where the model is.") for n in range(20)]
        replies = await asyncio.gather(*(client.synthesize(r) for r in requests), return_exceptions=True)
        errors = [r for r in replies if isinstance(r, BaseException)]
        assert errors == []  # zero backend_not_ready
        for reply in replies:
            assert reply.backend == "piper"  # type: ignore[union-attr]
            assert decode(reply.audio).duration_ms > 800  # type: ignore[union-attr]
        assert b.service.routing.forwarded > 0  # type: ignore[union-attr]  # b's share went through the hop
        # fallback routing too: no backend named, b knows a has Piper loaded
        assert b.service.routing.decide(SynthesisRequest(text="hi"), None).backend == "piper"  # type: ignore


async def test_a_stream_works_through_the_hop(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (_, b):
        routing = b.service.routing  # type: ignore[union-attr]
        text = "The first sentence is short. The second sentence follows it. The third one ends the stream."
        for _ in range(40):  # the queue group picks the instance: until b took (and forwarded) one
            before = routing.forwarded
            # cache off: a cached stream numbers its messages by position, not by the segments synthesized
            request = SynthesisRequest(text=text, backend="piper", format=AudioFormat.WAV, cache=False)
            stream = client.stream(request)
            chunks = [chunk async for chunk in stream]
            if routing.forwarded > before:
                break
        else:
            pytest.fail("b never received a request in 40 tries")
        assert {c.index for c in chunks} == {0, 1, 2}  # every segment came through the relay
        assert stream.end_headers[Header.STREAM_END.value] == "1"
        assert int(stream.end_headers[Header.TOTAL_BYTES.value]) == sum(len(c.data) for c in chunks)
        assert decode(b"".join(c.data for c in chunks), "wav").duration_ms > 3000


@pytest.mark.parametrize("leaves_by", ["unload", "failure"])
async def test_the_backend_subject_is_dropped_when_the_backend_leaves_loaded(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient, leaves_by: str
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (a, _):
        direct = await nc.request(SUBJECT, json.dumps({"text": "Straight to a."}).encode(), timeout=30)
        assert direct.headers[Header.BACKEND.value] == "piper" and direct.data  # type: ignore[index]
        actor = a.registry.actors["piper"]  # type: ignore[union-attr]
        if leaves_by == "unload":
            assert await actor.unload()
        else:
            actor.fail(BackendFailure(Reason.OUT_OF_MEMORY, "piper: out of memory", "Free memory, then retry."))
        assert actor.state is not State.LOADED
        await asyncio.wait_for(a.service.routing.settled(), 5)  # type: ignore[union-attr]  # the drain has finished
        assert a.service.routing.subscribed == frozenset()  # type: ignore[union-attr]
        assert await _no_responders(nc, SUBJECT)
        # the way back: loaded again, subscribed again
        if leaves_by == "unload":
            actor.retry()
            await next_state(a, "piper", State.LOADED, 30)
            routing = a.service.routing  # type: ignore[union-attr]
            await eventually(lambda: routing.subscribed == {"piper"}, explain=lambda: routing.subscribed)
            await a.nc.flush()  # type: ignore[union-attr]  # the server has a's subscription
            assert not await _no_responders(nc, SUBJECT)


async def test_no_instance_has_it_loaded_is_an_immediate_structured_error(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (a, _):
        actor = a.registry.actors["piper"]  # type: ignore[union-attr]
        actor.fail(BackendFailure(Reason.OUT_OF_MEMORY, "piper: out of memory", "Free memory, then retry."))
        await a.publisher.flush()  # type: ignore[union-attr]
        for _ in range(6):  # whichever instance takes it
            with pytest.raises(TtsError) as caught:
                await client.synthesize(SynthesisRequest(text="Nobody has it.", backend="piper"), timeout_s=10)
            error = caught.value
            assert error.code is ErrorCode.BACKEND_FAILED, error
            assert error.backend == "piper" and error.fix
            assert "fleet" in (error.detail or {}), error.detail


async def test_a_forwarded_request_is_never_forwarded_again(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (_, b):
        routing = b.service.routing  # type: ignore[union-attr]
        decision = routing.decide(
            SynthesisRequest(text="hop", backend="piper"), {"Tts-Forwarded-By": "a", "Tts-Forwarded-Backend": "piper"}
        )
        assert decision.actor.name == "piper"  # type: ignore[union-attr]  # a local route, not a Forward
        assert not decision.actor.ready  # type: ignore[union-attr]  # answered here with b's own state


async def test_a_request_delivered_while_the_subject_drains_is_declined_not_lost(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    async with piper_on_a_only(settings, tmp_path) as (a, _):
        routing = a.service.routing  # type: ignore[union-attr]
        actor = a.registry.actors["piper"]  # type: ignore[union-attr]
        async with routing._locks["piper"]:  # holds the drain back: piper leaves loaded, the subject stays
            actor.fail(BackendFailure(Reason.OUT_OF_MEMORY, "piper: out of memory", "Free memory, then retry."))
            direct = await nc.request(SUBJECT, json.dumps({"text": "Too late."}).encode(), timeout=5)
            assert direct.headers == {Header.STATUS.value: "declined"}
            with pytest.raises(TtsError) as caught:  # whichever instance takes it: an answer, at once
                await client.synthesize(SynthesisRequest(text="Nobody has it.", backend="piper"), timeout_s=10)
            assert caught.value.code is ErrorCode.BACKEND_FAILED
