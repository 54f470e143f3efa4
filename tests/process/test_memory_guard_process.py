"""The memory guard on a real ``tts-actor serve`` process: a limit below what it holds trips it on the first job.

TTS_MAX_RSS_BYTES at 50 MB is under any loaded Piper process, so the guard trips when the first
synthesis ends, reloads Piper (its log says so, event by event), finds the process still over the
limit and says that too; the service keeps serving throughout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nats

from tests.support.serve_process import serve_env, spawn
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import SynthesisRequest

LIMIT = 50 * 1024 * 1024


async def test_a_real_service_over_its_limit_reloads_piper_and_keeps_serving(tmp_path: Path, nats_url: str) -> None:
    env = serve_env(tmp_path, NATS_URL=nats_url, TTS_MAX_RSS_BYTES=str(LIMIT))
    async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
        await serve.wait_for("state_changed", to_state="loaded")
        nc = await nats.connect(nats_url)
        try:
            client = TtsClient(nc, timeout_s=60, retry_policy=None)
            first = await client.synthesize(SynthesisRequest(text="The first reply, before the guard trips."))
            assert first.duration_ms > 1000
            tripped = await serve.wait_for("memory_guard", action="tripped")
            assert tripped["backend"] == "piper" and tripped["rss_bytes"] > tripped["limit_bytes"] == LIMIT
            reloaded = await serve.wait_for("memory_guard", action="reloaded")
            assert reloaded["state"] == "loaded"
            ineffective = await serve.wait_for("memory_guard", action="ineffective")
            assert "TTS_MAX_RSS_BYTES" in ineffective["fix"]
            status = await client.status()
            assert status["memory_guard"] == {**status["memory_guard"], "limit_bytes": LIMIT, "reloads": 1}
            after = await client.synthesize(SynthesisRequest(text="Served again after the reload."))
            assert after.duration_ms > 1000
        finally:
            await nc.close()
    names = serve.names()
    unload, load = names.index("memory_guard"), len(names) - 1 - names[::-1].index("memory_guard")
    assert "state_changed" in names[unload:load]  # the unload and the load between the guard's events
