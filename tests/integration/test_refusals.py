"""Answers at once instead of a hang: missing packages, failed and loading backends, a full queue, a timeout."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.client import Client

from tests.support.helpers import GatedPiper, eventually, raw_request, serving, torch_install_fix_start
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest


async def test_missing_package_fails_within_a_second_with_the_fix(settings: Settings, nc: Client) -> None:
    failed: dict[str, tuple[float, dict]] = {}
    done = asyncio.Event()
    started = time.perf_counter()

    async def collect(msg) -> None:
        event = json.loads(msg.data)
        if event["to"] == "failed":
            failed[event["backend"]] = (time.perf_counter() - started, event)
            if len(failed) == 3:
                done.set()

    await nc.subscribe("tts.state.*", cb=collect)
    await nc.flush()
    app = TtsApp(settings)
    started = time.perf_counter()
    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await app.stop()
    assert set(failed) == {"chatterbox", "xtts", "higgs"}
    for backend, (seconds, event) in failed.items():
        assert seconds < 1.0, f"{backend} took {seconds:.2f} s"
        assert event["reason"] == "package_missing"
        assert event["fix"].startswith(torch_install_fix_start(backend))


async def test_failed_backend_replies_at_once_with_a_structured_error(piper_loaded: TtsApp, nc: Client) -> None:
    started = time.perf_counter()
    headers, body = await raw_request(nc, json.dumps({"text": "Hallo", "backend": "chatterbox"}).encode())
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert headers["Nats-Service-Error-Code"] == "503"
    assert "chatterbox" in headers["Nats-Service-Error"]
    error = json.loads(body)["error"]
    assert error["code"] == "backend_failed"
    assert error["state"] == "failed" and error["backend"] == "chatterbox"
    assert error["reason"] == "package_missing"
    assert error["fix"].startswith(torch_install_fix_start("chatterbox"))
    assert set(error) >= {"code", "message", "fix", "backend", "state", "retry_after_ms"}


async def test_loading_backend_replies_not_ready_at_once_and_wait_ms_is_woken_by_the_event(
    settings: Settings, client: TtsClient
) -> None:
    gated = GatedPiper(settings)
    app = TtsApp(settings.with_(backends=("gated", "piper")), adapters={"gated": gated})
    await app.start()
    try:
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        # while "gated" loads, the other backend keeps serving
        piper_reply = await client.synthesize(SynthesisRequest(text="Still here.", backend="piper"))
        assert piper_reply.backend == "piper"

        started = time.perf_counter()
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Not yet.", backend="gated"))
        assert time.perf_counter() - started < 1.0
        assert info.value.code is ErrorCode.BACKEND_NOT_READY
        assert info.value.state == "missing" and info.value.retry_after_ms

        waiting = asyncio.create_task(client.synthesize(SynthesisRequest(text="Now.", backend="gated", wait_ms=20000)))
        await eventually(lambda: app.registry.actors["gated"].status()["waiting"] == 1)  # parked on the event
        assert not waiting.done()
        opened = time.perf_counter()
        gated.load_gate.set()
        reply = await asyncio.wait_for(waiting, 20)
        assert reply.backend == "gated"
        # woken by the loaded event: well before the 20 s bound
        assert time.perf_counter() - opened < 10
    finally:
        gated.load_gate.set()
        await app.stop()


async def test_busy_when_the_backend_queue_is_full(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, backend_queue_depth=1) as (_, actor):
        first = asyncio.create_task(client.synthesize(SynthesisRequest(text="One.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        second = asyncio.create_task(client.synthesize(SynthesisRequest(text="Two.")))
        await eventually(lambda: actor.status()["queue"] == 1)
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Three."))
        assert info.value.code is ErrorCode.BUSY and info.value.retry_after_ms
        gated.synth_gate.set()
        assert (await first).backend == "gated"
        assert (await second).backend == "gated"


async def test_a_timed_out_synthesis_leaves_nobody_waiting_behind_it(settings: Settings, client: TtsClient) -> None:
    """The engine call cannot be interrupted: until it returns, callers hear `busy` at once, none hang."""
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, synthesis_timeout_s=0.5) as (_, actor):
        stuck = asyncio.create_task(client.synthesize(SynthesisRequest(text="Stuck.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        queued = asyncio.create_task(client.synthesize(SynthesisRequest(text="Next in line.")))
        with pytest.raises(TtsError) as info:
            await stuck
        assert info.value.code is ErrorCode.SYNTHESIS_TIMEOUT
        with pytest.raises(TtsError) as info:
            await asyncio.wait_for(queued, 5)  # answered, not left behind the abandoned call
        assert info.value.code is ErrorCode.BUSY and info.value.retry_after_ms
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Meanwhile."))
        assert info.value.code is ErrorCode.BUSY
        gated.synth_gate.set()
        await eventually(lambda: actor.ready)
        assert (await client.synthesize(SynthesisRequest(text="Free again."))).backend == "gated"
