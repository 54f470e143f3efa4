"""The supervisor's bound: a server that cannot come back is retried with backoff a few times, then left down."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

from prometheus_client import REGISTRY

from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.nats_edge.supervisor import EmbeddedSupervisor, RestartPolicy


def count(event: str) -> float:
    return REGISTRY.get_sample_value("tts_embedded_nats_total", {"event": event}) or 0.0


async def test_a_server_whose_port_is_taken_is_retried_with_backoff_then_given_up(tmp_path: Path) -> None:
    policy = RestartPolicy(max_restarts=3, initial_s=0.2, max_s=0.4)
    supervisor = EmbeddedSupervisor(EmbeddedNatsServer(tmp_path / "nats", port=-1), policy)
    await supervisor.start()
    server = supervisor.server
    before = {e: count(e) for e in ("exited", "restart_failed", "gave_up", "restarted")}
    squatter = socket.socket()
    try:
        assert server.pid is not None and server.port is not None
        port = server.port
        os.kill(server.pid, signal.SIGKILL)
        killed = time.monotonic()
        # the port is free once the child is gone; taken at once, before the first restart (0.2 s later)
        for _ in range(50):
            try:
                squatter.bind(("127.0.0.1", port))
                break
            except OSError:
                await asyncio.sleep(0.01)
        squatter.listen()
        assert supervisor._watch is not None
        await asyncio.wait_for(supervisor._watch, 10)  # the watch ends when it gives up
        elapsed = time.monotonic() - killed
    finally:
        squatter.close()
        await supervisor.stop()
    assert count("exited") == before["exited"] + 1
    assert count("restart_failed") == before["restart_failed"] + 3
    assert count("gave_up") == before["gave_up"] + 1 and count("restarted") == before["restarted"]
    assert 0.2 + 0.4 + 0.4 <= elapsed < 10  # 0.2, 0.4, then capped at 0.4: backoff, not a spin
    assert server.exit_code == -signal.SIGKILL and not server.running
