"""A real local HTTP server that plays the Hugging Face hub, with fault modes.

Serves the two endpoints the model manager uses, for repositories the test
defines in memory::

    with FakeHub() as hub:
        hub.add_repo("facebook/mms-tts-eng", {"config.json": b"{}", "model.safetensors": blob})
        settings = Settings(..., hf_endpoint=hub.url)
        hub.set_fault("facebook/mms-tts-eng", Fault.NOT_FOUND)   # or Fault.SLOW, slow_delay_s=0.2 ...

* ``GET /api/models/{repo}/revision/{rev}?blobs=true``: ``sha`` (commit) and
  ``siblings`` with ``rfilename``, ``size``, ``blobId`` (git blob sha1) and, for
  LFS files (``*.safetensors``, ``*.bin``, ``*.onnx``, ``*.pt`` or ``lfs=``), ``lfs``
  with ``sha256`` and ``size`` -- the metadata the real hub sends.
* ``GET /{repo}/resolve/{rev}/{file}``: the bytes, with Content-Length.

Fault modes per repository (:class:`Fault`): ``SILENT`` accepts and never answers,
``SLOW`` sends the body in a few chunks ``slow_delay_s`` apart, ``TRUNCATE`` cuts
the body in half under a full Content-Length, ``BAD_HASH`` flips bytes, ``HOLD``
keeps file downloads waiting until :meth:`FakeHub.release`, ``NOT_FOUND`` /
``UNAUTHORIZED`` / ``FORBIDDEN`` answer 404/401/403. A hub that refuses
connections is :func:`refused_url` (a port with nothing listening).
``hub.requests`` lists every path asked for, to prove that nothing was.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")
_INFO_RE = re.compile(r"^/api/models/(?P<repo>.+)/revision/(?P<rev>[^/]+)$")
_RESOLVE_RE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class Fault(enum.StrEnum):
    NONE = "none"
    SILENT = "silent"
    SLOW = "slow"
    TRUNCATE = "truncate"
    BAD_HASH = "bad_hash"
    HOLD = "hold"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"


STATUS_FAULTS = {Fault.NOT_FOUND: 404, Fault.UNAUTHORIZED: 401, Fault.FORBIDDEN: 403}


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    lfs: frozenset[str]
    fault: Fault = Fault.NONE
    slow_delay_s: float = 0.2
    only: str | None = None  # the one file a fault applies to; None: the listing and every file
    commit: str = ""

    def fault_for(self, name: str | None) -> Fault:
        """The fault for a file (``name``) or the listing (None)."""
        if self.only is None or self.only == name:
            return self.fault
        return Fault.NONE

    def sibling(self, name: str) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {
            "rfilename": name,
            "size": len(data),
            "blobId": hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest(),
        }
        if name in self.lfs:
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class FakeHub:
    """The server; a context manager. ``url`` is its base URL (HF_ENDPOINT)."""

    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _closing: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)

    # --- defining ------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], lfs: set[str] | None = None) -> FakeRepo:
        """Serve ``files`` as ``repo_id``; ``lfs`` names the LFS files (default: by suffix)."""
        lfs_names = frozenset(lfs if lfs is not None else {n for n in files if n.endswith(LFS_SUFFIXES)})
        digest = hashlib.sha1(repo_id.encode(), usedforsecurity=False)
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        repo = FakeRepo(dict(files), lfs_names, commit=digest.hexdigest())
        self.repos[repo_id] = repo
        return repo

    def set_fault(self, repo_id: str, fault: Fault, slow_delay_s: float | None = None, only: str | None = None) -> None:
        """Make ``repo_id`` misbehave; with ``only``, just that file does (the listing stays fine)."""
        repo = self.repos[repo_id]
        repo.fault = fault
        repo.only = only
        if slow_delay_s is not None:
            repo.slow_delay_s = slow_delay_s

    def release(self) -> None:
        """Let downloads held by ``Fault.HOLD`` go on."""
        self._released.set()

    # --- running -------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubHandler):
            fake = hub

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving; held and silent connections are let go and closed."""
        self._closing.set()
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, cancelled download) is expected here, not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _HubHandler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append(path)
        if match := _INFO_RE.match(path):
            self._info(match["repo"], match["rev"])
        elif match := _RESOLVE_RE.match(path):
            self._resolve(match["repo"], match["file"])
        else:
            self._status(404, {"error": "Not Found"})

    def _repo(self, repo_id: str, name: str | None = None) -> FakeRepo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._status(401, {"error": "Repository not found"})  # what the hub says to anonymous callers
            return None
        fault = repo.fault_for(name)
        if fault is Fault.SILENT:
            self.fake._closing.wait()  # accepted, read the request, never answers
            self.close_connection = True
            return None
        if fault in STATUS_FAULTS:
            self._status(STATUS_FAULTS[fault], {"error": fault.value})
            return None
        return repo

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        body = {"id": repo_id, "sha": repo.commit, "siblings": [repo.sibling(n) for n in sorted(repo.files)]}
        self._status(200, body)

    def _resolve(self, repo_id: str, name: str) -> None:
        repo = self._repo(repo_id, name)
        if repo is None:
            return
        fault = repo.fault_for(name)
        if name not in repo.files:
            self._status(404, {"error": f"{name} not found"})
            return
        data = repo.files[name]
        if fault is Fault.HOLD:
            self.fake._released.wait()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{repo.sibling(name).get("lfs", {}).get("sha256") or repo.sibling(name)["blobId"]}"')
        self.end_headers()
        if fault is Fault.TRUNCATE:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault is Fault.BAD_HASH:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        if fault is Fault.SLOW:
            step = max(1, -(-len(data) // 4))
            for offset in range(0, len(data), step):
                self.wfile.write(data[offset : offset + step])
                self.wfile.flush()
                self.fake._closing.wait(repo.slow_delay_s)
            return
        self.wfile.write(data)

    def _status(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
