"""Unloading and coming back: idle unload, reload on demand, requests during an unload, a stuck engine."""

from __future__ import annotations

import asyncio
import time

import pytest

from statemachine import State
from tests.support.helpers import GatedPiper, eventually, serving
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest


async def test_a_long_synthesis_is_not_unloaded_as_idle(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, idle_unload_s=0.3) as (_, actor):
        speaking = asyncio.create_task(client.synthesize(SynthesisRequest(text="A long one.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        await asyncio.sleep(0.8)  # well past the idle bound while it speaks
        assert actor.state is State.LOADED
        gated.synth_gate.set()
        assert (await speaking).backend == "gated"
        await eventually(lambda: actor.state is State.MISSING)  # idle once it has finished
        assert actor.lifecycle.reason.value == "idle_timeout"


async def test_an_unloaded_backend_comes_back_on_the_next_request(piper_loaded: TtsApp, client: TtsClient) -> None:
    assert (await client.control("piper", "unload"))["state"] == "missing"
    health = await client.health()
    assert (health["status"], health["ready"], health["on_demand"]) == ("idle", True, ["piper"])
    reply = await client.synthesize(SynthesisRequest(text="Back on demand.", wait_ms=20_000))
    assert reply.backend == "piper"
    assert (await client.health())["status"] == "ok"


class SlowUnload(GatedPiper):
    """Real Piper whose unload takes a while (a big model letting go of GPU memory)."""

    def unload(self) -> None:
        time.sleep(1.0)
        super().unload()


async def test_a_request_during_an_unload_waits_for_the_reload(settings: Settings, client: TtsClient) -> None:
    slow = SlowUnload(settings)
    async with serving(settings, slow) as (_, actor):
        unloading = asyncio.create_task(client.control("gated", "unload"))
        await eventually(lambda: actor.pending)  # the unload is under way
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Right now?"))
        assert info.value.code is ErrorCode.BACKEND_NOT_READY and "unloading" in info.value.message
        reply = await client.synthesize(SynthesisRequest(text="After the reload.", wait_ms=20_000))
        assert reply.backend == "gated"
        assert (await unloading)["ok"] is True


async def test_unload_while_stuck_answers_at_once(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, synthesis_timeout_s=0.5):
        with pytest.raises(TtsError):
            await client.synthesize(SynthesisRequest(text="Stuck."))
        result = await client.control("gated", "unload")
        assert result["ok"] is False and result["state"] == "loaded"
        started = time.perf_counter()
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Waiting?", wait_ms=5000))
        assert info.value.code is ErrorCode.BUSY and time.perf_counter() - started < 2
