"""Priorities: the actor schedules segment by segment, interactive before bulk, and ageing keeps bulk moving.

Real Piper (joe) in an actor of its own, its engine calls released one step at a time by the test
(:class:`tests.support.stepped.SteppedPiper`), so the order the scheduler chose is what the engine saw.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.stepped import SteppedPiper, make_job, settings_for, started_actor
from tts_actor.wire.messages import Priority

BULK = ["The first bulk sentence.", "The second bulk sentence.", "The third bulk sentence."]


async def test_an_interactive_segment_runs_before_a_bulk_jobs_next_segment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    piper = SteppedPiper(settings)
    actor = await started_actor(piper, settings)
    try:
        out: list[str] = []
        bulk = make_job(actor, "b", BULK, out, Priority.BULK)
        actor.submit(bulk)
        await piper.wait_entered()  # the bulk job's first segment is in the engine
        interactive = make_job(actor, "i", ["A person is waiting."], out, Priority.INTERACTIVE)
        actor.submit(interactive)
        assert actor.status()["priorities"]["interactive"]["queued"] == 1
        piper.run_freely()
        await asyncio.wait_for(asyncio.gather(bulk.future, interactive.future), 60)
        assert piper.calls == [BULK[0], "A person is waiting.", BULK[1], BULK[2]]
        assert out == ["b0", "i0", "b1", "b2"]
        assert all(s > 0.5 for s in bulk.sink.seconds)  # type: ignore[attr-defined]  # real speech each time
        waits = actor.status()["priorities"]
        assert waits["interactive"]["started"] == 1 and waits["bulk"]["started"] == 1
    finally:
        piper.run_freely()
        await actor.stop()


async def test_a_normal_job_waits_for_the_interactive_one_queued_after_it(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    piper = SteppedPiper(settings)
    actor = await started_actor(piper, settings)
    try:
        out: list[str] = []
        first = make_job(actor, "f", ["Holding the engine."], out)
        actor.submit(first)
        await piper.wait_entered()
        jobs = [
            make_job(actor, "n", ["Normal work."], out, Priority.NORMAL),
            make_job(actor, "b", ["Bulk work."], out, Priority.BULK),
            make_job(actor, "i", ["Interactive work."], out, Priority.INTERACTIVE),
        ]
        for job in jobs:
            actor.submit(job)
        piper.run_freely()
        await asyncio.wait_for(asyncio.gather(first.future, *(j.future for j in jobs)), 60)
        assert out == ["f0", "i0", "n0", "b0"]
    finally:
        piper.run_freely()
        await actor.stop()


async def test_bulk_still_completes_under_a_stream_of_interactive_work(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, priority_ageing_s=0.2)
    piper = SteppedPiper(settings)
    actor = await started_actor(piper, settings)
    try:
        out: list[str] = []
        bulk = make_job(actor, "b", BULK, out, Priority.BULK)
        actor.submit(bulk)
        interactive = []
        steps = 0
        while not bulk.future.done():
            assert steps < 400, f"bulk starved: {out}"
            while actor.status()["priorities"]["interactive"]["queued"] < 2:  # never a moment without it waiting
                job = make_job(actor, "i", [f"Interactive number {len(interactive)}."], out, Priority.INTERACTIVE)
                interactive.append(job)
                actor.submit(job)
            await piper.wait_entered()
            piper.step()
            steps += 1
        await bulk.future
        done_bulk = [label for label in out if label.startswith("b")]
        assert done_bulk == ["b0", "b1", "b2"]
        # interactive work ran between the bulk segments: bulk got its segments by ageing, not by a quiet moment
        assert out.index("b2") - out.index("b0") > 2
        assert actor.runner.inbox.aged >= 2
    finally:
        piper.run_freely()
        await actor.stop()
