"""Load: 200 concurrent requests through ``TtsClient`` against one ``tts-actor serve`` process (real Piper).

The service runs as a child process so that its peak RSS (``VmHWM``) is its own. Its admission
limits are the defaults (16 in flight, 8 queued): most of the burst is refused with ``busy`` at
first, and the client's retries within the 30 s deadline must get every request its audio, at
about the rate the same process answers the same requests one at a time (measured first, in the
same run: the serial figure). Every request bypasses the audio cache, so each is an engine call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import nats
import pytest

from tests.support.helpers import wav_info
from tests.support.serve_process import ServeProcess, serve_env, spawn
from tts_actor.client.reply import SynthesisReply
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import SynthesisRequest

pytestmark = pytest.mark.timeout(600)  # about 60 s on 2 cores
REQUESTS = int(os.environ.get("TTS_LOAD_REQUESTS", "200"))
SERIAL = 20  # requests answered one after another first: the throughput the burst is compared with
DEADLINE_S = 30.0
SENTENCES = ("Hello there.", "Good morning.", "See you soon.", "Thank you.", "The train is late.")


def request(i: int) -> SynthesisRequest:
    return SynthesisRequest(text=SENTENCES[i % len(SENTENCES)], cache=False)


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


async def drain_log(serve: ServeProcess) -> None:
    """Read the service's log as it comes: thousands of lines would fill the pipe and block the service."""
    assert serve.proc.stderr is not None
    while line := await serve.proc.stderr.readline():
        text = line.decode(errors="replace").strip()
        if text.startswith("{"):
            serve.events.append(json.loads(text))


async def serial_rate(client: TtsClient) -> float:
    """Requests per second, one at a time (after one unmeasured warm-up)."""
    await client.synthesize(request(0))
    started = time.monotonic()
    for i in range(SERIAL):
        await client.synthesize(request(i))
    return SERIAL / (time.monotonic() - started)


async def test_200_concurrent_requests_all_get_audio(tmp_path: Path, nats_url: str) -> None:
    env = serve_env(tmp_path, NATS_URL=nats_url)
    nc = await nats.connect(nats_url)
    client = TtsClient(nc, timeout_s=DEADLINE_S)
    try:
        async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
            await serve.wait_for("state_changed", to_state="loaded")
            idle_rss = peak_rss_mib(serve.proc.pid)
            log_reader = asyncio.create_task(drain_log(serve))
            serial = await serial_rate(client)
            client.retries = 0
            started = time.monotonic()
            calls = [asyncio.create_task(client.synthesize(request(i))) for i in range(REQUESTS)]
            done, hanging = await asyncio.wait(calls, timeout=DEADLINE_S + 30)
            elapsed = time.monotonic() - started
            peak_rss = peak_rss_mib(serve.proc.pid)
            serve.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(log_reader, 60)
            await serve.finish()
    finally:
        await nc.close()
    for task in hanging:
        task.cancel()
    replies = [t.result() for t in done if t.exception() is None]
    failures = [t.exception() for t in done if t.exception() is not None]
    lost = len(failures) + len(hanging)
    rate = len(replies) / elapsed
    refusals = Counter(e.get("code") for e in serve.events if e.get("event") == "synthesize_rejected")
    print(
        f"load: {REQUESTS} concurrent requests, {DEADLINE_S:.0f} s deadline: answered {len(replies)}, "
        f"retries {client.retries}, lost {lost} (failed {len(failures)}, hanging {len(hanging)}) in {elapsed:.1f} s: "
        f"{rate:.2f} req/s vs {serial:.2f} req/s serial ({rate / serial:.2f}x); refused at the endpoint "
        f"{dict(refusals)}; service peak RSS {peak_rss:.0f} MiB (loaded and idle: {idle_rss:.0f} MiB)"
    )
    assert not hanging
    assert not failures, failures[:3]
    assert len(replies) == REQUESTS
    assert all(isinstance(r, SynthesisReply) and wav_info(r.audio).duration_s > 0.3 for r in replies)
    crashed = [e for e in serve.events if e.get("event") in ("synthesize_crashed", "synthesis_job_crashed")]
    assert not crashed, crashed[:3]
