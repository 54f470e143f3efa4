"""The fleet: several instances on one real nats-server, seen together; a dead one ages out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from nats.aio.client import Client

from tests.support.cli import cli_env, run_cli
from tests.support.fleet import fleet_started
from tests.support.helpers import eventually
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.fleet.view import Departure, follow_departures, read_fleet
from tts_actor.wire.messages import SynthesisRequest

TTL_S = 2.0  # the bucket's TTL in these tests: a dead instance is gone two seconds after its last refresh


@contextlib.asynccontextmanager
async def fleet_of_two(settings: Settings) -> AsyncIterator[list[TtsApp]]:
    """Instance ``a`` with Piper; instance ``b`` with Piper and Chatterbox (whose package is absent here)."""
    apps = [
        TtsApp(settings.with_(instance="a", backends=("piper",), fleet_ttl_s=TTL_S)),
        TtsApp(settings.with_(instance="b", backends=("piper", "chatterbox"), fleet_ttl_s=TTL_S)),
    ]
    async with fleet_started(*apps):
        yield apps


async def test_status_shows_every_instance_and_backend(settings: Settings, client: TtsClient) -> None:
    async with fleet_of_two(settings):
        status = await client.status()
        fleet = status["fleet"]
        assert [i["instance"] for i in fleet["instances"]] == ["a", "b"]
        assert fleet["backends"]["piper"]["loaded"] == ["a", "b"]
        (failed,) = fleet["backends"]["chatterbox"]["failed"]
        assert (failed["instance"], failed["reason"]) == ("b", "package_missing")
        assert "pip install" in failed["fix"]
        b = next(i for i in fleet["instances"] if i["instance"] == "b")
        assert {row["name"]: row["state"] for row in b["backends"]} == {"piper": "loaded", "chatterbox": "failed"}


async def test_cli_status_prints_the_fleet(settings: Settings) -> None:
    async with fleet_of_two(settings):
        env = cli_env(NATS_URL=settings.nats_url or "")
        text = await asyncio.to_thread(run_cli, "status", env=env)
        assert text.returncode == 0, text.stderr
        assert "fleet: 2 instance(s)" in text.stdout
        assert "piper       loaded on a, b" in text.stdout
        assert "failed on b: package_missing" in text.stdout
        assert "chatterbox  not loaded on any instance" in text.stdout and "nowhere" not in text.stdout
        as_json = json.loads((await asyncio.to_thread(run_cli, "status", "--json", env=env)).stdout)
        assert as_json["fleet"]["backends"]["piper"]["loaded"] == ["a", "b"]


async def test_srv_stats_carry_backend_state_queue_and_real_time_factor(
    settings: Settings, nc: Client, client: TtsClient
) -> None:
    app = TtsApp(settings.with_(instance="solo", backends=("piper", "chatterbox")))
    await app.start()
    try:
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        reply = await client.synthesize(SynthesisRequest(text="Real time factor, measured."))
        assert reply.backend == "piper"
        stats = json.loads((await nc.request("$SRV.STATS.tts", b"", timeout=5)).data)
        synthesize = next(e for e in stats["endpoints"] if e["name"] == "synthesize")
        data = synthesize["data"]
        assert data["instance"] == "solo"
        piper = data["backends"]["piper"]
        assert (piper["state"], piper["queue"]) == ("loaded", 0)
        assert piper["synthesized"] >= 1 and piper["audio_s"] > 0
        assert 0 < piper["rtf"] < 50  # seconds of work per second of audio: a number, not a placeholder
        chatterbox = data["backends"]["chatterbox"]
        assert (chatterbox["state"], chatterbox["reason"], chatterbox["rtf"]) == ("failed", "package_missing", None)
    finally:
        await app.stop()


async def _entry_written(nc: Client, bucket: str, instance: str, timeout_s: float = 60.0) -> None:
    """Wait, on the KV watcher, until ``instance`` has an entry (its process is up and loaded)."""
    kv = await nc.jetstream().key_value(bucket)
    watcher = await kv.watchall()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            entry = await watcher.updates(timeout=max(0.1, deadline - loop.time()))
            if entry is not None and entry.value and json.loads(entry.value).get("instance") == instance:
                if json.loads(entry.value)["to"] == "loaded":
                    return
    finally:
        await watcher.stop()


async def _kv_watchers(nc: Client, bucket: str) -> set[str]:
    """The consumers on the bucket's stream: a KV watcher is one, made when the watch begins."""
    return {info.name for info in await nc.jetstream().consumers_info(f"KV_{bucket}")}


async def test_an_instance_killed_without_cleanup_ages_out(tmp_path: Path, settings: Settings, nc: Client) -> None:
    async with fleet_of_two(settings):  # a and b create the bucket with the test's TTL and stay alive
        env = cli_env(
            NATS_URL=settings.nats_url or "",
            TTS_BACKENDS="piper",
            TTS_INSTANCE_ID="doomed",
            TTS_FLEET_TTL_S=str(TTL_S),
            TTS_CACHE_DIR=str(tmp_path / "doomed-cache"),
            TTS_ALLOW_DOWNLOAD="0",
        )
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "tts_actor", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _entry_written(nc, settings.kv_bucket, "doomed")
            assert "doomed" in await read_fleet(nc, settings.kv_bucket)
            watchers_before = await _kv_watchers(nc, settings.kv_bucket)
            departures = follow_departures(nc, settings.kv_bucket)
            first = asyncio.ensure_future(anext(departures))

            async def watching() -> bool:  # its consumer exists: doomed's entry is among what it reads first
                return bool(await _kv_watchers(nc, settings.kv_bucket) - watchers_before)

            await eventually(watching, interval_s=0.05)
            proc.kill()  # SIGKILL: no KV cleanup
            await asyncio.to_thread(proc.wait)
            gone = await asyncio.wait_for(first, 15)
            assert gone == Departure("piper", "doomed", "aged_out")
            await departures.aclose()
        finally:
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        fleet = await read_fleet(nc, settings.kv_bucket)
        assert "doomed" not in fleet
        assert set(fleet) == {"a", "b"}  # the live ones are refreshed, never aged out


def test_fleet_and_store_settings_come_from_the_environment() -> None:
    import pytest

    from tts_actor.config import ConfigError, load_settings

    s = load_settings(
        {
            "TTS_FLEET_TTL_S": "12",
            "TTS_JS_REPLICAS": "3",
            "TTS_PROFILES_BUCKET": "voices_b",
            "TTS_AUDIO_CACHE_BUCKET": "audio_b",
            "TTS_AUDIO_CACHE_TTL_S": "3600",
            "TTS_AUDIO_CACHE_MAX_BYTES": str(64 * 1024 * 1024),
        }
    )
    assert (s.fleet_ttl_s, s.js_replicas, s.profiles_bucket) == (12.0, 3, "voices_b")
    assert (s.audio_cache_bucket, s.audio_cache_ttl_s, s.audio_cache_max_bytes) == ("audio_b", 3600.0, 64 * 2**20)
    defaults = load_settings({})
    assert (defaults.fleet_ttl_s, defaults.js_replicas, defaults.audio_cache_ttl_s) == (30.0, 1, 7 * 24 * 3600.0)
    for bad in ({"TTS_JS_REPLICAS": "0"}, {"TTS_FLEET_TTL_S": "0.1"}, {"TTS_AUDIO_CACHE_MAX_BYTES": "10"}):
        with pytest.raises(ConfigError):
            load_settings(bad)
