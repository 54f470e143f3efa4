"""The fleet's coalescing when the instance holding a claim is killed (SIGKILL: no release, no goodbye).

``tts-actor serve`` (real Piper) takes a long request and holds its claim; an in-process instance on
another subject prefix gets the same request and waits on that claim; the serving process is killed
mid-synthesis; the claim stops being refreshed and the waiters synthesize it themselves, once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import nats
import pytest

from tests.support.helpers import eventually, wav_info
from tests.support.serve_process import serve_env, spawn
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.wire.messages import SynthesisRequest

LONG = " ".join(f"Sentence {n} of a long message that the first instance never finishes speaking." for n in range(12))
CLAIM_TTL_S = 2.0


@pytest.mark.slow
async def test_a_killed_holders_waiters_synthesize_it_themselves(
    tmp_path: Path, settings: Settings, nats_url: str
) -> None:
    env = serve_env(tmp_path, NATS_URL=nats_url, TTS_AUDIO_CLAIM_TTL_S=str(CLAIM_TTL_S)) | {"TTS_INSTANCE_ID": "holder"}
    b = TtsApp(settings.with_(instance="b", backends=("piper",), subject_prefix="tb", audio_claim_ttl_s=CLAIM_TTL_S))
    nc = await nats.connect(nats_url, connect_timeout=2)
    try:
        async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as holder:
            await holder.wait_for("state_changed", backend="piper", to_state="loaded")
            await b.start()
            assert b.registry is not None and (await b.registry.actors["piper"].wait_settled(30)).value == "loaded"
            claims = await nc.jetstream().create_key_value(bucket=settings.audio_claims_bucket, ttl=CLAIM_TTL_S)
            watcher = await claims.watchall()
            request = SynthesisRequest(text=LONG)
            held = asyncio.create_task(TtsClient(nc, timeout_s=5, retry_policy=None).synthesize(request))
            entry = await watcher.updates(30)
            while entry is None or not entry.value:  # the holder's claim: it is synthesizing now
                entry = await watcher.updates(30)
            assert b"holder" in entry.value
            on_b = TtsClient(nc, prefix="tb", timeout_s=90, retry_policy=None)
            waiting = [asyncio.create_task(on_b.synthesize(request)) for _ in range(3)]
            coalescer = b.service.cached.coalescer  # type: ignore[union-attr]
            await eventually(lambda: len(coalescer.flights) == 1, timeout_s=10)  # b's leader waits on the claim
            calls = b.registry.actors["piper"].engine_calls
            assert calls == 0 and not any(task.done() for task in waiting)
            os.killpg(holder.proc.pid, signal.SIGKILL)
            replies = await asyncio.wait_for(asyncio.gather(*waiting), 90)
        with pytest.raises(TtsError):  # the killed holder never answers its own caller
            await held
        assert len({r.audio for r in replies}) == 1 and wav_info(replies[0].audio).duration_s > 20
        assert sorted(r.headers["Tts-Cache"] for r in replies) == ["joined", "joined", "miss"]
        segments = int(replies[0].headers["Tts-Segment-Count"])
        assert b.registry.actors["piper"].engine_calls == segments, "b spoke it once for its three callers"
    finally:
        await b.stop()
        await nc.close()
