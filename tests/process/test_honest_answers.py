"""The smaller lies of issue 9, each shown gone: what the service and the CLI tell a caller is what happens."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.cli import OFFLINE_HUB, cli_env, free_port
from tests.support.helpers import GatedPiper, eventually, serving, wav_info
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.cli.doctor import run_doctor
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import ConfigError, Settings, load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest


async def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> tuple[int, str, str]:
    """The real command line in a child process, awaited without blocking the service on this loop."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tts_actor", *args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class CountingPiper(GatedPiper):
    """The gated real Piper, counting the syntheses it is asked for."""

    calls = 0

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.calls += 1
        return super().synthesize(request, voice)


async def test_unload_during_a_synthesis_answers_at_once_and_queued_requests_keep_their_wait(
    settings: Settings, client: TtsClient
) -> None:
    gated = GatedPiper(settings)
    async with serving(settings, gated) as (_, actor):
        gated.synth_gate.clear()
        first = asyncio.create_task(client.synthesize(SynthesisRequest(text="The first one is being spoken.")))
        assert await asyncio.to_thread(gated.synth_started.wait, 10)
        queued = asyncio.create_task(client.synthesize(SynthesisRequest(text="The second one waits.", wait_ms=20_000)))
        await eventually(lambda: actor.status()["queue"] == 1)
        answer = await client.control(gated.name, "unload")  # before: no answer within 5 s, the CLI said internal
        assert answer["ok"] is True and answer["pending"] is True, answer
        assert "after the current synthesis" in answer["message"]
        assert not actor.ready  # no new request is handed to the backend being unloaded
        gated.synth_gate.set()
        assert wav_info((await first).audio).frames > 0
        # the queued request saw the unload, then waited (its wait_ms) for the reload on demand
        second = await queued
        assert wav_info(second.audio).duration_s > 0.5
        assert actor.state is State.LOADED
        assert actor.lifecycle.last_event.seq >= 3  # loaded (1), unloaded to missing (2), loaded again (3)


async def test_a_publish_without_a_reply_subject_is_dropped_not_synthesized(
    settings: Settings, client: TtsClient, nc: Client
) -> None:
    counting = CountingPiper(settings)
    async with serving(settings, counting):
        await nc.publish("tts.synthesize", SynthesisRequest(text="Nobody hears this.").to_json())
        reply = await client.synthesize(SynthesisRequest(text="Somebody hears this."))
        assert wav_info(reply.audio).frames > 0
        assert counting.calls == 1  # the publish was dropped (with a log line), not spoken into the void


async def test_say_waits_by_default_so_a_first_try_after_an_unload_works(
    piper_loaded: TtsApp, client: TtsClient, tmp_path: Path
) -> None:
    assert piper_loaded.registry is not None
    assert (await client.control("piper", "unload"))["ok"] is True
    assert piper_loaded.registry.actors["piper"].state is State.MISSING
    out = tmp_path / "after-unload.wav"
    env = cli_env(NATS_URL=piper_loaded.settings.nats_url or "")
    code, stdout, stderr = await run_cli("say", "Back again after the unload.", "-o", str(out), env=env)
    assert code == 0, stderr
    assert "backend=piper" in stdout and wav_info(out.read_bytes()).duration_s > 0.5


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"TTS_SHUTDOWN_GRACE_S": "nan"}, "finite"),
        ({"TTS_SHUTDOWN_GRACE_S": "inf"}, "finite"),
        ({"TTS_SYNTHESIS_TIMEOUT_S": "0"}, "greater than 0"),
        ({"TTS_NATS_CONNECT_TIMEOUT_S": "-Infinity"}, "finite"),
        ({"TTS_STARTUP_TIMEOUT_S": "1e400"}, "finite"),
        ({"TTS_DOWNLOAD_TOTAL_TIMEOUT_S": "1e12"}, "at most"),
        ({"TTS_EMBEDDED_NATS_PORT": "70000"}, "at most 65535"),
        ({"TTS_EMBEDDED_NATS_PORT": "0"}, "at least 1"),
        ({"TTS_METRICS_PORT": "65536"}, "at most 65535"),
        ({"TTS_MAX_INFLIGHT": "9" * 5000}, "expected an integer"),
        ({"NATS_URL": "http://127.0.0.1:4222"}, "scheme"),
        ({"NATS_URL": "nats://127.0.0.1:99999"}, "1 to 65535"),
        ({"NATS_URL": "nats://:4222"}, "host"),
        ({"NATS_USER": "translator"}, "NATS_PASSWORD"),
        ({"NATS_TOKEN": "t", "NATS_USER": "u", "NATS_PASSWORD": "p"}, "choose one"),
        ({"NATS_CREDS": "/nonexistent/user.creds"}, "no such file"),
        ({"NATS_CERT": __file__}, "NATS_KEY"),
    ],
)
def test_unusable_settings_are_refused_naming_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert next(iter(env)) in message and words in message, message
    assert "set_int_max_str_digits" not in message and len(message) < 300


def test_usable_nats_urls_and_zero_meaning_off_are_accepted() -> None:
    settings = load_settings(
        {"NATS_URL": "nats://a:4222, tls://b:4443", "TTS_SHUTDOWN_GRACE_S": "0", "TTS_IDLE_UNLOAD_S": "0"}
    )
    assert settings.nats_url == "nats://a:4222, tls://b:4443" and settings.shutdown_grace_s == 0
    assert load_settings({"NATS_URL": "localhost:4222"}).nats_url == "localhost:4222"


async def test_an_out_of_range_port_is_reported_as_such_not_as_in_use() -> None:
    code, _, stderr = await run_cli("serve", env=cli_env(TTS_EMBEDDED_NATS_PORT="70000"))
    assert code == 2
    assert "TTS_EMBEDDED_NATS_PORT" in stderr and "65535" in stderr and "in use" not in stderr


async def test_a_nats_url_that_does_not_resolve_fails_at_once(tmp_path: Path) -> None:
    env = cli_env(
        NATS_URL="garbage",
        TTS_NATS_CONNECT_TIMEOUT_S="120",  # the old behaviour waited this out
        TTS_BACKENDS="piper",
        TTS_CACHE_DIR=str(tmp_path),
    )
    code, _, stderr = await run_cli("serve", env=env, timeout_s=30)
    assert code == 3, stderr
    assert "does not resolve" in stderr and "garbage" in stderr and "Traceback" not in stderr


async def test_ctrl_c_while_connecting_stops_at_once(tmp_path: Path) -> None:
    """A server that accepts TCP and never speaks: the connect would take TTS_NATS_CONNECT_TIMEOUT_S."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        env = cli_env(
            NATS_URL=f"nats://127.0.0.1:{mute.getsockname()[1]}",
            TTS_NATS_CONNECT_TIMEOUT_S="120",
            TTS_BACKENDS="piper",
            TTS_CACHE_DIR=str(tmp_path),
            TTS_LOG_FORMAT="json",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tts_actor",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert proc.stderr is not None
            line = await asyncio.wait_for(proc.stderr.readline(), 30)  # start-up has begun
            assert line.startswith(b"{"), line
            os.killpg(proc.pid, signal.SIGINT)
            rest = await asyncio.wait_for(proc.stderr.read(), 20)  # before: ignored until the 120 s passed
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    events = [json.loads(x)["event"] for x in rest.decode().splitlines() if x.startswith("{")]
    assert code == 0 and "shutting_down" in events, events


def test_doctor_looks_at_the_running_embedded_server(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(nats_url.rsplit(":", 1)[1])
    settings = load_settings({}).with_(embedded_nats_port=port, backends=("piper",), cache_dir=tmp_path)
    assert run_doctor(settings, as_json=True, env=OFFLINE_HUB) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["nats"]["level"] == "ok" and "embedded server" in checks["nats"]["detail"], checks["nats"]
    assert checks["kv bucket"]["level"] == "ok"
    # and with nothing there, it says so without failing: the service is simply not running
    idle = settings.with_(embedded_nats_port=free_port())
    assert run_doctor(idle, as_json=True, env=OFFLINE_HUB) == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert "not running" in checks["embedded nats"]["detail"]


async def test_a_huge_integer_is_refused_in_the_callers_terms(piper_loaded: TtsApp, nc: Client) -> None:
    body = b'{"text": "Hello.", "wait_ms": ' + b"9" * 5000 + b"}"
    msg = await nc.request("tts.synthesize", body, timeout=10)
    error = TtsError.from_dict(json.loads(msg.data))
    assert error.code is ErrorCode.INVALID_REQUEST and "4300 digits" in error.message
    assert "sys." not in error.message and "set_int_max_str_digits" not in error.message
