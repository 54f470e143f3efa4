"""MMS end to end: a tiny random VITS served by the local hub, downloaded, loaded, speaking over NATS.

The model is made by the test with ``transformers`` (random weights, so the audio is noise);
the hub is a real HTTP server on loopback; NATS is the real server. Nothing is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from nats.aio.client import Client

if not os.environ.get("CI"):  # in CI `make test` installs the [mms] extra: a missing one must fail
    pytest.importorskip("transformers")
    pytest.importorskip("torch")

from statemachine import State
from tests.support.fakehub import FakeHub
from tests.support.tiny_vits import TINY_SAMPLING_RATE, make_tiny_vits
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.wire.messages import AudioFormat, SynthesisRequest, Timings


def repo_files(model_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}


async def test_mms_downloads_from_the_hub_then_loads_and_speaks(
    tmp_path: Path, nats_url: str, nc: Client, client: TtsClient
) -> None:
    files = repo_files(make_tiny_vits(tmp_path / "tiny"))
    events: list[dict] = []
    settled = asyncio.Event()

    async def collect(msg) -> None:
        events.append(json.loads(msg.data))
        if events[-1]["to"] in ("loaded", "failed"):
            settled.set()

    await nc.subscribe("tts.state.mms", cb=collect)
    await nc.flush()
    with FakeHub() as hub:
        hub.add_repo("facebook/mms-tts-eng", files)
        settings = load_settings(
            {
                "HF_ENDPOINT": hub.url,
                "TTS_MMS_LANGUAGES": "en",
                "TTS_BACKENDS": "mms,piper",
                "TTS_ACCEPT_LICENSES": "cc-by-nc-4.0",
            }
        ).with_(nats_url=nats_url, cache_dir=tmp_path / "cache", instance="mms-test")
        app = TtsApp(settings)
        await app.start()
        try:
            await asyncio.wait_for(settled.wait(), 60)
            assert events[-1]["to"] == "loaded", events[-1]
            short = await client.synthesize(SynthesisRequest(text="Hi.", backend="mms", format=AudioFormat.PCM))
            sentence = "Hello there, this is a much longer sentence."
            long = await client.synthesize(  # word timings asked of an engine that reports none
                SynthesisRequest(text=sentence, backend="mms", timings=Timings.WORD)
            )
        finally:
            await app.stop()
        assert any(p.endswith("model.safetensors") for p in hub.requests)
    transitions = [(e["from"], e["to"], e["reason"]) for e in events if e["reason"] != "download_progress"]
    assert transitions[0] == (None, "missing", "startup")
    assert transitions[1] == ("missing", "downloading", "download_started")
    assert transitions[-2][2] == "download_complete"
    assert transitions[-1] == ("downloading", "loaded", "loaded_after_download")
    total = sum(len(b) for b in files.values())
    assert events[-2]["progress"] == {"done": total, "total": total}
    assert short.sample_rate == long.sample_rate == TINY_SAMPLING_RATE
    assert short.backend == "mms" and long.headers["Tts-Voice"].startswith("mms")
    assert len(long.audio) - 44 > len(short.audio)
    assert [t.get("timings_unavailable") for t in long.timings] == ["engine_reports_none"], long.timings
    assert all("words" not in t for t in long.timings), "no word times are made up"

    # a restart finds the model in the cache and needs no hub at all (local first)
    offline = settings.with_(hf_endpoint="http://127.0.0.1:9", allow_download=False, instance="mms-again")
    again = TtsApp(offline)
    await again.start()
    try:
        assert again.registry is not None
        assert await again.registry.actors["mms"].wait_settled(60) is State.LOADED
        assert again.registry.actors["mms"].lifecycle.reason.value == "loaded_from_cache"
    finally:
        await again.stop()
