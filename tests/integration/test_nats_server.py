"""The embedded nats-server: ready from its own log, a clear error when it cannot start."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer, NatsServerError


def test_a_taken_port_fails_at_once_with_the_servers_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        with pytest.raises(NatsServerError) as info:
            EmbeddedNatsServer(tmp_path, port=port).start()
    assert time.perf_counter() - started < 5
    # refused before the server starts: the reason names the port, and no JetStream store was opened or made
    assert "address already in use" in str(info.value).lower() and str(port) in str(info.value)
    assert not any(tmp_path.iterdir())


def test_a_random_port_is_read_from_the_log_and_freed_on_stop(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path, port=-1, max_payload=8 * 1024 * 1024)
    url = server.start()
    assert server.port and url == f"nats://127.0.0.1:{server.port}"
    server.stop()
    with socket.socket() as again:
        again.bind(("127.0.0.1", server.port))
