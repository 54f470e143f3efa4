"""Running ``tts-actor`` as a user would, from a test: a clean environment, a free port, the CLI as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "NATS_", "OTEL_"))}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tts_actor", *args], env=env, capture_output=True, text=True, timeout=60
    )


def serve_until_sample(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> tuple[subprocess.Popen[str], list[dict]]:
    """``tts-actor serve ARGS`` as a process; its JSON log events up to the sample's outcome (the last one)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tts_actor", "serve", *args],
        env=env,
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    events: list[dict] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{"):
                events.append(json.loads(line))
                if events[-1]["event"] in ("sample_written", "sample_skipped"):
                    break
    except BaseException:  # never leave the service behind a failed read
        proc.kill()
        raise
    return proc, events


def closed_loopback_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# the hub is a closed loopback port: no test depends on the internet, and none waits on it
OFFLINE_HUB = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_loopback_port()}"}
