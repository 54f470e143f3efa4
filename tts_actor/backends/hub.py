"""The Hugging Face hub over HTTP, with explicit connect and read timeouts.

Two documented endpoints only: ``/api/models/{repo}/revision/{rev}?blobs=true``
(the file list with sizes, git blob ids and LFS sha256) and
``/{repo}/resolve/{commit}/{file}`` (the bytes). Every way the hub can fail is
turned into a :class:`BackendFailure` with a reason and a fix here, so the model
manager above only decides what to do with it.

Mapping of network failures to reasons (documented for operators):

* connection refused, name not resolved, connect timeout -> ``hub_unreachable``
* the hub accepts but sends nothing within the read timeout while listing the
  repository -> ``hub_unreachable`` (no answer at all is an unreachable hub)
* a file body stops within the read timeout -> ``download_stalled``
* a body that ends short, or bytes whose size/hash differ -> ``corrupt_model``
* 401/403/404 -> ``model_unavailable``; other HTTP errors -> ``download_failed``
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx2

from statemachine import Reason
from tts_actor.backends.base import BackendFailure

CHUNK_BYTES = 1024 * 1024
UNAVAILABLE_STATUSES = (401, 403, 404)


class TransferCancelled(Exception):
    """The transfer was asked to stop (shutdown, watchdog, total timeout)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository snapshot as the hub describes it."""

    name: str
    size: int
    blob_id: str  # git blob sha1 (the hub's ``blobId``)
    sha256: str | None = None  # set for LFS files

    @property
    def etag(self) -> str:
        """The name huggingface_hub gives the blob in its cache: sha256 for LFS, else the git sha1."""
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class RepoSnapshot:
    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]


def _hub_fix(endpoint: str) -> str:
    return (
        f"Check the network path to {endpoint} (proxy, DNS, firewall; HF_ENDPOINT/TTS_HF_ENDPOINT), "
        "or run `tts-actor fetch <backend>` on a host that can reach it and share TTS_CACHE_DIR."
    )


def git_blob_sha1(size: int) -> Any:
    """A sha1 primed with git's blob header, so feeding the content yields the hub's ``blobId``."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {size}\0".encode())
    return digest


class HubClient:
    """Blocking calls against one hub endpoint; every call is bounded by the timeouts."""

    def __init__(
        self,
        endpoint: str,
        connect_timeout_s: float,
        read_timeout_s: float,
        token: str | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.read_timeout_s = read_timeout_s
        self._timeout = httpx2.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=1.0)
        self._headers = {"User-Agent": "tts-actor"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _client(self) -> httpx2.Client:
        return httpx2.Client(timeout=self._timeout, headers=self._headers, follow_redirects=True)

    # --- listing -------------------------------------------------------------
    def snapshot(self, repo_id: str, revision: str) -> RepoSnapshot:
        """The commit and files of ``repo_id`` at ``revision``."""
        url = f"{self.endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
        try:
            with self._client() as client:
                response = client.get(url, params={"blobs": "true"})
        except httpx2.TimeoutException as exc:
            raise self._unreachable(repo_id, exc, answered=isinstance(exc, httpx2.ReadTimeout)) from exc
        except (httpx2.ConnectError, httpx2.NetworkError, httpx2.ProtocolError) as exc:
            raise self._unreachable(repo_id, exc, answered=False) from exc
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:  # e.g. an endpoint without a scheme
            raise self._bad_endpoint(repo_id, exc) from exc
        self._raise_for_status(repo_id, response.status_code, response.text[:200])
        try:
            data = response.json()
            files = tuple(self._remote_file(sibling) for sibling in data["siblings"])
            return RepoSnapshot(repo_id, str(data["sha"]), files)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendFailure(
                Reason.DOWNLOAD_FAILED,
                f"{repo_id}: the hub at {self.endpoint} sent an unreadable file list ({exc!r})",
                "Check HF_ENDPOINT/TTS_HF_ENDPOINT points at a Hugging Face hub.",
            ) from exc

    @staticmethod
    def _remote_file(sibling: dict[str, Any]) -> RemoteFile:
        lfs = sibling.get("lfs") or {}
        size = int(lfs.get("size", sibling.get("size")))
        return RemoteFile(sibling["rfilename"], size, str(sibling.get("blobId", "")), lfs.get("sha256"))

    # --- transfer ------------------------------------------------------------
    def download(
        self,
        repo_id: str,
        commit: str,
        remote: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        """Stream one file into ``dest`` and verify its size and hash; ``dest`` is removed on any failure."""
        url = f"{self.endpoint}/{repo_id}/resolve/{commit}/{quote(remote.name)}"
        try:
            with dest.open("wb") as out:
                self._stream(url, repo_id, remote, out, on_bytes, cancelled)
        except OSError as exc:  # writing the file: the disk filled up after the space check, or went away
            dest.unlink(missing_ok=True)
            raise self._write_failed(repo_id, remote, exc) from exc
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _stream(
        self,
        url: str,
        repo_id: str,
        remote: RemoteFile,
        out: BinaryIO,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        sha256 = hashlib.sha256()
        sha1 = git_blob_sha1(remote.size)
        received = 0
        try:
            with self._client() as client, client.stream("GET", url) as response:
                self._raise_for_status(repo_id, response.status_code, f"{remote.name}")
                for chunk in response.iter_raw(CHUNK_BYTES):
                    if cancelled.is_set():
                        raise TransferCancelled(remote.name)
                    out.write(chunk)
                    sha256.update(chunk)
                    sha1.update(chunk)
                    received += len(chunk)
                    on_bytes(len(chunk))
        except httpx2.TimeoutException as exc:
            if received == 0 and isinstance(exc, httpx2.ConnectTimeout):
                raise self._unreachable(repo_id, exc, answered=False) from exc
            raise BackendFailure(
                Reason.DOWNLOAD_STALLED,
                f"{repo_id}/{remote.name}: no data for {self.read_timeout_s} s after {received} of {remote.size} "
                "bytes (TTS_DOWNLOAD_READ_TIMEOUT_S)",
                "Retry later (`tts-actor retry <backend>`), or raise TTS_DOWNLOAD_READ_TIMEOUT_S on slow links.",
                {"repo": repo_id, "file": remote.name, "received": received, "expected": remote.size},
            ) from exc
        except httpx2.ConnectError as exc:
            raise self._unreachable(repo_id, exc, answered=False) from exc
        except (httpx2.NetworkError, httpx2.ProtocolError) as exc:
            raise self._corrupt(repo_id, remote, f"transfer ended after {received} bytes ({exc!r})", received) from exc
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise self._bad_endpoint(repo_id, exc) from exc
        if received != remote.size:
            raise self._corrupt(repo_id, remote, f"got {received} bytes", received)
        if remote.sha256 is not None and sha256.hexdigest() != remote.sha256:
            raise self._corrupt(repo_id, remote, f"sha256 {sha256.hexdigest()} differs from {remote.sha256}", received)
        if remote.sha256 is None and remote.blob_id and sha1.hexdigest() != remote.blob_id:
            what = f"git blob id {sha1.hexdigest()} differs from {remote.blob_id}"
            raise self._corrupt(repo_id, remote, what, received)

    # --- errors --------------------------------------------------------------
    @staticmethod
    def _write_failed(repo_id: str, remote: RemoteFile, exc: OSError) -> BackendFailure:
        detail = {"repo": repo_id, "file": remote.name, "expected": remote.size}
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return BackendFailure(
                Reason.DISK_FULL,
                f"{repo_id}/{remote.name}: the disk filled up while writing {remote.size} bytes ({exc})",
                "Free space under TTS_CACHE_DIR, or point it at a larger disk.",
                detail,
            )
        return BackendFailure(
            Reason.DOWNLOAD_FAILED,
            f"{repo_id}/{remote.name}: cannot write the download ({exc})",
            "Check that TTS_CACHE_DIR is writable (`tts-actor doctor`).",
            detail,
        )

    def _bad_endpoint(self, repo_id: str, exc: Exception) -> BackendFailure:
        return BackendFailure(
            Reason.DOWNLOAD_FAILED,
            f"{repo_id}: cannot use the hub endpoint {self.endpoint!r} ({type(exc).__name__}: {exc})",
            "Set HF_ENDPOINT/TTS_HF_ENDPOINT to a full URL such as https://huggingface.co.",
            {"repo": repo_id, "endpoint": self.endpoint},
        )

    def _unreachable(self, repo_id: str, exc: Exception, answered: bool) -> BackendFailure:
        how = (
            f"accepted the connection but sent nothing within {self.read_timeout_s} s"
            if answered
            else f"could not be reached ({type(exc).__name__}: {exc})"
        )
        return BackendFailure(
            Reason.HUB_UNREACHABLE,
            f"{repo_id}: the hub at {self.endpoint} {how}",
            _hub_fix(self.endpoint),
            {"repo": repo_id, "endpoint": self.endpoint},
        )

    def _raise_for_status(self, repo_id: str, status: int, what: str) -> None:
        if status < 400:
            return
        if status in UNAVAILABLE_STATUSES:
            raise BackendFailure(
                Reason.MODEL_UNAVAILABLE,
                f"{repo_id}: the hub answered HTTP {status} ({'gated or private' if status != 404 else 'not found'}): "
                f"{what}",
                "Set the HF_TOKEN env var to a token that has accepted the model's terms, or point the backend "
                "at another repository with TTS_<BACKEND>_REPO (e.g. TTS_MMS_REPO).",
                {"repo": repo_id, "status": status},
            )
        raise BackendFailure(
            Reason.DOWNLOAD_FAILED,
            f"{repo_id}: the hub at {self.endpoint} answered HTTP {status}: {what}",
            "The hub is having trouble; the download is retried with backoff, or run `tts-actor retry <backend>`.",
            {"repo": repo_id, "status": status},
        )

    @staticmethod
    def _corrupt(repo_id: str, remote: RemoteFile, what: str, received: int) -> BackendFailure:
        return BackendFailure(
            Reason.CORRUPT_MODEL,
            f"{repo_id}/{remote.name}: {what}, expected {remote.size} bytes"
            + (f" with sha256 {remote.sha256}" if remote.sha256 else ""),
            "The partial file was removed; `tts-actor retry <backend>` downloads it again.",
            {"repo": repo_id, "file": remote.name, "received": received, "expected": remote.size},
        )
