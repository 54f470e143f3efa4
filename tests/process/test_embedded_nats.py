"""The embedded nats-server under a real ``tts-actor serve --http`` (``make run``): kill -9 of it, a second instance.

Before: the killed child was never reaped nor restarted, the service stayed useless and ``/healthz`` said
``alive``; a second ``make run`` opened the first one's JetStream store before failing on the port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx2

from tests.support.cli import free_port, run_cli
from tests.support.serve_process import ServeProcess, serve_env, spawn

BACK_BOUND_S = 20.0  # the bound: synthesis back, or /healthz failing, within 20 s of the kill
SPEAK = {"model": "tts-1", "voice": "alloy", "input": "Back again.", "response_format": "wav"}


async def started(serve: ServeProcess) -> tuple[int, str]:
    """Wait until Piper is loaded and the edge serves; (the nats-server child's pid, the edge's URL)."""
    nats = await serve.wait_for("embedded_nats_started")
    await serve.wait_for("state_changed", to_state="loaded")
    edge = await serve.wait_for("http_edge_serving")
    return int(nats["pid"]), edge["url"]


def reaped(pid: int) -> bool:
    """True when ``pid`` is not a zombie: gone from the process table (or, reused, a live process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(") ", 1)[1][0] != "Z"


async def test_kill_9_of_the_embedded_server_is_restarted_and_synthesis_comes_back(tmp_path: Path) -> None:
    env = serve_env(tmp_path, TTS_EMBEDDED_NATS_PORT=str(free_port()))
    http_port = free_port()
    async with spawn([sys.executable, "-m", "tts_actor", "serve", "--http", f"127.0.0.1:{http_port}"], env) as serve:
        pid, url = await started(serve)
        async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.post("/v1/audio/speech", json=SPEAK)).status_code == 200
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            exited = await serve.wait_for("embedded_nats_exited", BACK_BOUND_S)
            restarted = await serve.wait_for("embedded_nats_restarted", BACK_BOUND_S)
            restart_s = time.monotonic() - killed
            await serve.wait_for("nats_reconnected", BACK_BOUND_S)
            reply = await http.post("/v1/audio/speech", json=SPEAK)
            back_s = time.monotonic() - killed
            assert reply.status_code == 200 and reply.headers["tts-backend"] == "piper", reply.text
            assert (await http.get("/healthz")).json() == {"status": "alive"}
        os.killpg(serve.proc.pid, signal.SIGINT)
        assert await serve.finish() == 0, serve.events[-8:]
    print(f"kill -9 of nats-server: restarted in {restart_s:.2f} s, synthesis back {back_s:.2f} s after the kill")
    assert exited["exit_code"] == -signal.SIGKILL
    assert reaped(pid), "the killed nats-server is left as a zombie"
    assert restarted["pid"] != pid and restarted["url"].endswith(f":{env['TTS_EMBEDDED_NATS_PORT']}")
    assert back_s < BACK_BOUND_S
    names = serve.names()  # the restarted server is the one stopped at the end, in order
    assert names.index("embedded_nats_stopped") > names.index("shutting_down")


async def test_with_restarts_off_healthz_fails_past_the_grace(tmp_path: Path) -> None:
    grace_s = 2.0
    env = serve_env(
        tmp_path,
        TTS_EMBEDDED_NATS_PORT=str(free_port()),
        TTS_EMBEDDED_NATS_MAX_RESTARTS="0",
        TTS_HEALTH_NATS_GRACE_S=str(grace_s),
        TTS_METRICS_PORT=str(free_port()),
    )
    http_port = free_port()
    async with spawn([sys.executable, "-m", "tts_actor", "serve", "--http", f"127.0.0.1:{http_port}"], env) as serve:
        pid, url = await started(serve)
        probes = f"http://127.0.0.1:{env['TTS_METRICS_PORT']}"
        async with httpx2.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{url}/healthz")).status_code == 200
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await serve.wait_for("embedded_nats_gave_up", BACK_BOUND_S)
            await serve.wait_for("nats_disconnected", BACK_BOUND_S)
            # nothing announces "the grace is over": the probe is asked, as an orchestrator would, bounded
            edge = await http.get(f"{url}/healthz")
            while edge.status_code == 200 and time.monotonic() - killed < BACK_BOUND_S:
                await asyncio.sleep(0.25)
                edge = await http.get(f"{url}/healthz")
            failing_s = time.monotonic() - killed
            probe = await http.get(f"{probes}/healthz")
        os.killpg(serve.proc.pid, signal.SIGINT)
        await serve.finish()
    print(f"restarts off: /healthz 503 {failing_s:.2f} s after kill -9 of nats-server (grace {grace_s} s)")
    assert edge.status_code == 503 and edge.json()["nats"] == "disconnected", edge.text
    assert "fix" in edge.json() and edge.json()["down_s"] > grace_s
    assert probe.status_code == 503 and probe.json()["nats"] == "disconnected"
    assert grace_s <= failing_s < BACK_BOUND_S


async def test_a_second_instance_on_a_busy_port_stops_before_the_store_and_the_engines(tmp_path: Path) -> None:
    with socket.socket() as first:  # the first instance's nats-server, as far as the port goes
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        env = serve_env(tmp_path, TTS_EMBEDDED_NATS_PORT=str(port))
        started_at = time.monotonic()
        refused = await asyncio.to_thread(run_cli, "serve", env=env)
        elapsed = time.monotonic() - started_at
    print(f"second instance refused in {elapsed:.2f} s (exit {refused.returncode})")
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert f"port {port} on 127.0.0.1: address already in use" in refused.stderr
    assert "fix: free port" in refused.stderr and "TTS_EMBEDDED_NATS_PORT" in refused.stderr
    assert not (tmp_path / "cache" / "nats").exists(), "the store directory was touched"
    assert "state_changed" not in refused.stderr  # no engine was started either
