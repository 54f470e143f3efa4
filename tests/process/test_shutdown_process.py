"""Shutdown of real ``tts-actor serve`` processes: a terminal's Ctrl-C, SIGTERM with NATS gone, long syntheses.

Every test runs the service as a child process in a session of its own and signals it the way a terminal
(the whole foreground process group) or an orchestrator (the process) would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest
from nats.js.errors import KeyNotFoundError

from tests.support.cli import free_port
from tests.support.serve_process import serve_env, spawn
from tts_actor.client.tts_client import TtsClient
from tts_actor.errors import TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.messages import SynthesisRequest

STOP_BOUND_S = 15.0  # generous: a shutdown that hangs on a dead connection took 10 s per step before


async def kv_entries(url: str, bucket: str = "tts_state") -> dict[str, bytes]:
    """Every live key of the state bucket."""
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        kv = await nc.jetstream(timeout=2).key_value(bucket)
        found: dict[str, bytes] = {}
        for key in ("piper", "piper.shutdown-test"):
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                found[key] = entry.value
        return found
    finally:
        await nc.close()


async def test_ctrl_c_on_the_terminal_stops_the_embedded_stack_in_order(tmp_path: Path) -> None:
    """SIGINT to the whole process group: the embedded server must not die first; every step runs, exit 0."""
    port = free_port()
    env = serve_env(tmp_path, TTS_EMBEDDED_NATS_PORT=str(port))
    async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
        await serve.wait_for("state_changed", to_state="loaded")
        url = f"nats://127.0.0.1:{port}"
        assert set(await kv_entries(url)) == {"piper", "piper.shutdown-test"}
        signalled = time.monotonic()
        os.killpg(serve.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        code = await serve.finish()
        elapsed = time.monotonic() - signalled
    names = serve.names()
    print(f"ctrl-c shutdown (embedded NATS): exit {code} in {elapsed:.2f} s")
    assert code == 0, serve.events[-8:]
    assert "shutdown_step_failed" not in names and "shutdown_step_timed_out" not in names, serve.events[-8:]
    assert names.index("embedded_nats_stopped") > names.index("shutting_down")
    assert elapsed < STOP_BOUND_S
    # the server's store outlives it: started again on it, it holds no entry of the stopped instance
    with EmbeddedNatsServer(tmp_path / "cache" / "nats", port=-1) as server:
        assert await kv_entries(server.url) == {}


async def test_ctrl_c_with_an_external_server_removes_the_kv_entries(tmp_path: Path, nats_url: str) -> None:
    env = serve_env(tmp_path, NATS_URL=nats_url)
    async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
        await serve.wait_for("state_changed", to_state="loaded")
        assert set(await kv_entries(nats_url)) == {"piper", "piper.shutdown-test"}
        signalled = time.monotonic()
        os.killpg(serve.proc.pid, signal.SIGINT)
        code = await serve.finish()
        elapsed = time.monotonic() - signalled
    print(f"ctrl-c shutdown (external NATS): exit {code} in {elapsed:.2f} s")
    assert code == 0, serve.events[-8:]
    assert await kv_entries(nats_url) == {}
    assert elapsed < STOP_BOUND_S


async def test_sigterm_with_the_external_server_dead_still_runs_every_step(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", port=-1)
    url = await asyncio.to_thread(server.start)
    env = serve_env(tmp_path, NATS_URL=url)
    try:
        async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
            await serve.wait_for("state_changed", to_state="loaded")
            await asyncio.to_thread(server.stop)  # NATS goes away; the service is reconnecting
            await serve.wait_for("nats_disconnected")
            signalled = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            code = await serve.finish()
            elapsed = time.monotonic() - signalled
    finally:
        await asyncio.to_thread(server.stop)
    names = serve.names()
    print(f"SIGTERM shutdown with NATS dead: exit {code} in {elapsed:.2f} s")
    assert code == 0, serve.events[-8:]
    assert "stopped" in names, serve.events[-8:]  # the last step ran: the engines stopped too
    assert elapsed < STOP_BOUND_S


LONG_SYNTHESIS = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from tts_actor.app import run_service
    from tts_actor.backends.piper import PiperBackend
    from tts_actor.config import load_settings
    from tts_actor.observability.logs import setup_logging

    class LongSynthesis(PiperBackend):
        '''The real Piper adapter whose synthesis runs far past the shutdown grace (an engine busy for minutes).'''

        calls = 0

        def synthesize(self, request, voice):
            LongSynthesis.calls += 1
            print(f"synthesis started {LongSynthesis.calls}", flush=True)
            threading.Event().wait(120)
            return super().synthesize(request, voice)

    settings = load_settings().with_(cache_dir=Path(sys.argv[1]), backends=("piper",), shutdown_grace_s=GRACE)
    setup_logging("info", "json")
    sys.exit(run_service(settings, adapters={"piper": LongSynthesis(settings)}))
    """
)


@pytest.mark.parametrize("grace_s", [2.0])
async def test_sigterm_during_a_synthesis_longer_than_the_grace_exits_cleanly(
    tmp_path: Path, nats_url: str, grace_s: float
) -> None:
    """Queued jobs do not start once shutdown begins; the process exits 0 within the grace plus a small bound."""
    script = LONG_SYNTHESIS.replace("GRACE", repr(grace_s))
    env = serve_env(tmp_path, NATS_URL=nats_url)
    nc = await nats.connect(nats_url)
    client = TtsClient(nc, timeout_s=60, retry_policy=None)  # the instance's own answers, not a retry's
    try:
        async with spawn([sys.executable, "-c", script, str(tmp_path / "cache")], env) as serve:
            await serve.wait_for("state_changed", to_state="loaded")
            requests = [
                asyncio.create_task(client.synthesize(SynthesisRequest(text=f"Request {i}."))) for i in range(3)
            ]
            assert serve.proc.stdout is not None
            assert (await asyncio.wait_for(serve.proc.stdout.readline(), 30)).strip() == b"synthesis started 1"
            signalled = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            replies = await asyncio.gather(*requests, return_exceptions=True)
            code = await serve.finish()
            elapsed = time.monotonic() - signalled
    finally:
        await nc.close()
    print(f"SIGTERM during a {grace_s} s-grace-exceeding synthesis: exit {code} in {elapsed:.2f} s")
    assert code == 0, serve.events[-8:]  # not 134 (abort) nor 1
    assert not any(line.startswith("synthesis started 2") for line in serve.stdout), serve.stdout
    assert all(isinstance(r, TtsError) and "shutting down" in r.message for r in replies), replies
    assert "exiting_with_engine_call_running" in serve.names()
    assert elapsed < grace_s + 5.0
