"""Bench rows for a fleet under pressure (``make bench``, tests/bench.py): priorities, deadlines, memory.

Each row beside its baseline, measured in the same run on the same service:
(m) an interactive request's first audio, idle vs behind 6 long bulk jobs (the aim: at most 2.5x);
(n) a ``deadline_ms: 300`` request behind that backlog, refused with ``deadline_unreachable``, vs a bare
NATS request-reply; (o) the process's resident size over a 2,000-request soak, start vs end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from typing import Any

from tests.support.helpers import eventually
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.lifecycle.memory_guard import read_rss_bytes
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import Priority, SynthesisRequest

FIRST_AUDIO_RUNS = 15
BULK_JOBS = 6
DEADLINE_RUNS = 30
SOAK_REQUESTS = 2000
SOAK_CALLERS = 8
INTERACTIVE = "Your voice message is ready, and this is how it sounds."
# a conversation's history: 12 messages of a chat's usual length (one segment each), spoken for later
BULK_TEXT = " ".join(
    f"Message {n} of the old conversation says that the meeting moved to Thursday afternoon at three."
    for n in range(12)
)
STREAM_TIMEOUT_S = 120.0
ARRIVAL_SPREAD_S = 1.5  # interactive requests arrive at a random point of this window (longer than a bulk segment)


async def _first_audio_s(client: TtsClient, priority: Priority) -> float:
    started = time.perf_counter()
    request = SynthesisRequest(text=INTERACTIVE, priority=priority, cache=False)
    async with client.stream(request, STREAM_TIMEOUT_S) as chunks:
        async for _ in chunks:
            return time.perf_counter() - started
    raise RuntimeError("the stream ended without audio")


async def _bulk(client: TtsClient, gaps: list[float]) -> None:
    """One long bulk job, streamed (cancelling this task cancels it: tts.cancel); ``gaps``: seconds between chunks."""
    async with client.stream(SynthesisRequest(text=BULK_TEXT, priority=Priority.BULK, cache=False), 300) as chunks:
        last = None
        async for _ in chunks:
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now


async def pressure_rows(app: TtsApp, client: TtsClient, nc: Any, row: Any, latency_row: Any, bare: list[float]) -> list:
    """Rows (m), (n), (o); ``row``/``latency_row`` build tests/bench.py's rows, ``bare``: its bare NATS samples."""
    assert app.registry is not None
    actor = app.registry.actors["piper"]
    await _first_audio_s(client, Priority.INTERACTIVE)  # warm-up: the pace is measured
    idle = [await _first_audio_s(client, Priority.INTERACTIVE) for _ in range(FIRST_AUDIO_RUNS)]
    gaps: list[float] = []
    backlog = [asyncio.ensure_future(_bulk(client, gaps)) for _ in range(BULK_JOBS)]
    try:
        await eventually(lambda: actor.queued >= BULK_JOBS - 1, timeout_s=30)  # the backlog is in place
        behind = []
        arrivals = random.Random(17)
        for _ in range(FIRST_AUDIO_RUNS):
            # a person's request comes at any moment of a bulk segment, not just as one begins (right after the
            # previous interactive one): without this pause every sample would wait out a whole bulk segment
            await asyncio.sleep(arrivals.uniform(0, ARRIVAL_SPREAD_S))
            behind.append(await _first_audio_s(client, Priority.INTERACTIVE))
        queued_then = actor.queued
        late = SynthesisRequest(text=INTERACTIVE, deadline_ms=300, priority=Priority.BULK, cache=False).to_json()
        refused: list[float] = []
        for _ in range(DEADLINE_RUNS):
            began = time.perf_counter()
            reply = await nc.request("tts.synthesize", late, timeout=5)
            refused.append((time.perf_counter() - began) * 1000)
            if (reply.headers or {}).get(Header.ERROR_CODE.value) != "deadline_unreachable":
                raise RuntimeError(f"expected deadline_unreachable, got {reply.headers}")
    finally:
        for task in backlog:
            task.cancel()
        for task in backlog:
            with contextlib.suppress(BaseException):
                await task
    await eventually(lambda: actor.queued == 0 and not actor.busy, timeout_s=60)
    idle += [await _first_audio_s(client, Priority.INTERACTIVE) for _ in range(FIRST_AUDIO_RUNS)]  # drift: both sides
    i50, b50 = statistics.median(idle) * 1000, statistics.median(behind) * 1000
    rows = [
        row("(m) interactive first audio, idle", i50, max(idle) * 1000, note=f"n={len(idle)}, before and after"),
        row(
            f"(m) interactive first audio behind {BULK_JOBS} long bulk jobs",
            b50,
            max(behind) * 1000,
            note=f"{b50 / i50:.2f}x idle (aim <= 2.5x), {queued_then} bulk jobs queued after; a bulk segment "
            f"(p50 gap between its chunks) {statistics.median(gaps) * 1000:.0f} ms"
            if gaps
            else "",
        ),
        latency_row("(n) deadline_ms 300 behind the backlog -> deadline_unreachable", refused, bare),
    ]
    rows.append(await soak_row(client, row))
    return rows


async def soak_row(client: TtsClient, row: Any) -> Any:
    """(o) RSS before and after SOAK_REQUESTS short syntheses (cache off), SOAK_CALLERS at a time."""
    counter = iter(range(SOAK_REQUESTS))
    start = read_rss_bytes() or 0
    peak = start
    began = time.perf_counter()

    async def caller() -> None:
        nonlocal peak
        for n in counter:
            await client.synthesize(SynthesisRequest(text=f"Soak number {n}.", cache=False), STREAM_TIMEOUT_S)
            peak = max(peak, read_rss_bytes() or 0)

    await asyncio.gather(*(caller() for _ in range(SOAK_CALLERS)))
    end = read_rss_bytes() or 0
    mib = 2**20
    return row(
        f"(o) RSS over a {SOAK_REQUESTS}-request soak",
        note=f"start {start / mib:.1f} MiB (the baseline), end {end / mib:.1f} MiB ({(end - start) / mib:+.1f} MiB), "
        f"peak {peak / mib:.1f} MiB, {time.perf_counter() - began:.0f} s",
    )
