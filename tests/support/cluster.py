"""A three-node nats-server cluster on loopback, run from the shipped ops/cluster/nats-cluster.conf."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tts_actor.nats_edge.embedded_server import find_nats_server

CLUSTER_CONF = Path(__file__).resolve().parents[2] / "ops" / "cluster" / "nats-cluster.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ClusterNode:
    name: str
    client_port: int
    route_port: int
    store_dir: Path
    proc: subprocess.Popen[str] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    jetstream_led: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self.lines) < 500:
                self.lines.append(line.rstrip())
            if "Server is ready" in line:
                self.ready.set()
            if "metadata leader" in line and "no metadata leader" not in line:
                self.jetstream_led.set()  # this node knows the JetStream meta leader (maybe itself)
        self.ready.set()


class LoopbackCluster:
    """Three nodes named n1..n3, each with its own JetStream store; ``kill`` is a SIGKILL."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.nodes = [ClusterNode(f"n{i + 1}", free_port(), free_port(), root / f"n{i + 1}") for i in range(size)]

    def start(self, timeout_s: float = 30.0) -> None:
        routes = {f"NATS_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{n.route_port}" for i, n in enumerate(self.nodes)}
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, **routes, "NATS_SERVER_NAME": node.name, "NATS_STORE_DIR": str(node.store_dir)}
            args = [
                find_nats_server(),
                "-c",
                str(CLUSTER_CONF),
                "-a",
                "127.0.0.1",
                "-p",
                str(node.client_port),
                "--http_port",
                str(free_port()),
                "--cluster",
                f"nats://127.0.0.1:{node.route_port}",
            ]
            node.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            threading.Thread(target=node._read_log, name=f"nats-{node.name}-log", daemon=True).start()
        for node in self.nodes:
            if not node.jetstream_led.wait(timeout_s):
                self.stop()
                raise RuntimeError(f"{node.name} found no JetStream meta leader:\n" + "\n".join(node.lines[-20:]))

    def kill(self, node: ClusterNode) -> None:
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
