"""Deadline-aware admission: a request whose first audio cannot come before its deadline is refused at once.

Real Piper (joe). In the actor tests its engine calls are released by the test
(:class:`tests.support.stepped.SteppedPiper`), so a backlog stays put while the refusal is checked
and the engine's record shows the refused text was never spoken. The wire test runs the real
service on a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.client import Client

from tests.support.backends import isolated_settings, running_service
from tests.support.helpers import eventually
from tests.support.stepped import SteppedPiper, make_job, settings_for, started_actor
from tts_actor.client.retry import ClientRetryPolicy
from tts_actor.client.tts_client import TtsClient
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import Priority, SynthesisRequest

LONG = [
    "This sentence is part of a long history that nobody is waiting for right now, said in full.",
    "It goes on for a while, with commas, pauses, and enough words to keep the engine busy for seconds.",
    "And then it ends, only to be followed by another job just like it, further down the queue.",
]
REFUSED_TEXT = "Refused before it was spoken."


async def _warm(actor_piper: SteppedPiper, actor: object, out: list[str]) -> None:
    """One job run freely, so the backend's pace (its real-time factor) is measured."""
    warm = make_job(actor, "w", LONG[:2], out)  # type: ignore[arg-type]
    actor_piper.run_freely()
    actor.submit(warm)  # type: ignore[attr-defined]
    await asyncio.wait_for(warm.future, 60)
    actor_piper.run_freely(False)


async def test_a_deadline_behind_a_backlog_is_refused_before_the_engine_sees_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    piper = SteppedPiper(settings)
    actor = await started_actor(piper, settings)
    try:
        out: list[str] = []
        await _warm(piper, actor, out)
        assert actor.stats.recent_rtf is not None and actor.status()["rtf_recent"] is not None
        backlog = [make_job(actor, f"n{k}-", LONG, out) for k in range(8)]
        for job in backlog:
            actor.submit(job)
        await piper.wait_entered()  # the first backlog segment holds the engine
        late = make_job(actor, "late", [REFUSED_TEXT], out, deadline_ms=300)
        with pytest.raises(TtsError) as refused:
            actor.submit(late)
        error = refused.value
        assert error.code is ErrorCode.DEADLINE_UNREACHABLE and error.service_status == 503
        assert error.retry_after_ms is not None and error.retry_after_ms >= 100
        assert error.detail is not None and error.detail["estimated_first_audio_ms"] > 300
        assert error.detail["ahead"]["segments"] >= 20 and error.detail["deadline_ms"] <= 300
        # with half the backlog's time as its deadline, a normal request is refused and an interactive one, which
        # waits for the segment in the engine only, is admitted and served
        half_ms = error.detail["estimated_first_audio_ms"] // 2
        with pytest.raises(TtsError) as also_refused:
            actor.submit(make_job(actor, "n-late", [REFUSED_TEXT], out, deadline_ms=half_ms))
        assert also_refused.value.code is ErrorCode.DEADLINE_UNREACHABLE
        urgent = make_job(actor, "i", ["Urgent."], out, Priority.INTERACTIVE, deadline_ms=half_ms)
        actor.submit(urgent)
        piper.step()  # the segment in the engine ends; the interactive job's is next
        await piper.wait_entered()
        assert piper.calls[-1] == "Urgent."
        piper.run_freely()
        await asyncio.wait_for(urgent.future, 30)
        for job in backlog:  # the rest is not needed: cancelled, it stops at its next segment
            job.control.cancelled = True
        await asyncio.wait_for(asyncio.gather(*(j.future for j in backlog), return_exceptions=True), 60)
        assert REFUSED_TEXT not in piper.calls
        assert out[out.index("n0-0") + 1] == "i0"
    finally:
        piper.run_freely()
        await actor.stop()


async def test_without_a_measured_pace_nothing_is_refused_for_its_deadline(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    piper = SteppedPiper(settings)
    actor = await started_actor(piper, settings)
    try:
        out: list[str] = []
        holding = make_job(actor, "a", LONG, out)
        actor.submit(holding)
        await piper.wait_entered()
        job = make_job(actor, "d", ["Admitted."], out, deadline_ms=300)
        actor.submit(job)  # no estimate yet: admitted; its deadline still stops it while queued
        assert actor.queued == 1
        piper.run_freely()
        await asyncio.wait_for(holding.future, 60)
        with pytest.raises(TtsError) as stopped:
            await asyncio.wait_for(job.future, 60)
        assert stopped.value.code is ErrorCode.SYNTHESIS_TIMEOUT and "Admitted." not in piper.calls
    finally:
        piper.run_freely()
        await actor.stop()


async def test_the_refusal_on_the_wire_carries_retry_after_and_the_fleet_and_the_client_honours_it(
    tmp_path: Path,
) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",))
    piper = SteppedPiper(settings)
    async with running_service(tmp_path, settings, {"piper": piper}) as (app, client):
        assert app.registry is not None
        actor = app.registry.actors["piper"]
        assert (await actor.wait_settled(60)).value == "loaded"
        piper.run_freely()
        await client.synthesize(SynthesisRequest(text=" ".join(LONG[:2])))  # the pace is measured
        piper.run_freely(False)
        nc: Client = client.nc
        backlog = [asyncio.ensure_future(_bulk(client)) for _ in range(6)]
        await piper.wait_entered()
        await _queued(actor, 5)
        status = (await client.status())["backends"][0]
        assert status["priorities"]["bulk"]["queued"] == 5 and status["priorities"]["bulk"]["oldest_wait_ms"] > 0
        assert status["priorities"]["interactive"]["queued"] == 0 and status["rtf_recent"] > 0
        stats = json.loads((await nc.request("$SRV.STATS.tts", b"", timeout=5)).data)
        data = next(e for e in stats["endpoints"] if e["name"] == "synthesize")["data"]["backends"]["piper"]
        assert data["priorities"]["bulk"]["queued"] == 5 and data["priorities"]["normal"]["started"] >= 1
        body = SynthesisRequest(text=REFUSED_TEXT, deadline_ms=300, priority=Priority.BULK).to_json()
        reply = await nc.request("tts.synthesize", body, timeout=5)
        headers = reply.headers or {}
        assert headers.get(Header.ERROR_CODE.value) == "deadline_unreachable"
        error = json.loads(reply.data)["error"]
        assert error["retry_after_ms"] >= 100
        assert error["detail"]["fleet"]["here"]["instance"] == settings.instance
        assert {"loaded", "failed", "other"} <= set(error["detail"]["fleet"])
        # a client whose own deadline ends before retry_after_ms is told at once, not after its timeout
        retrying = TtsClient(nc, timeout_s=0.4, retry_policy=ClientRetryPolicy())
        with pytest.raises(TtsError) as told:
            await retrying.synthesize(SynthesisRequest(text=REFUSED_TEXT, priority=Priority.BULK))
        assert told.value.code is ErrorCode.DEADLINE_UNREACHABLE and retrying.retries == 0
        assert REFUSED_TEXT not in piper.calls
        for task in backlog:  # leaving each stream cancels its job on the service (tts.cancel)
            task.cancel()
        await asyncio.gather(*backlog, return_exceptions=True)
        piper.run_freely()
        await eventually(lambda: actor.queued == 0 and not actor.busy, timeout_s=60)


async def _bulk(client: TtsClient) -> None:
    """A long bulk job, streamed: cancelling this task cancels the job (``tts.cancel``)."""
    request = SynthesisRequest(text=" ".join(LONG), priority=Priority.BULK, cache=False)  # six jobs, not one shared
    async with client.stream(request, 120) as chunks:
        async for _ in chunks:
            pass


async def _queued(actor: object, count: int) -> None:
    await eventually(lambda: actor.queued >= count)  # type: ignore[attr-defined]
