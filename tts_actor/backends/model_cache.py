"""The local model cache: huggingface_hub's own layout under ``settings.models_dir``.

Layout: ``models--org--name/{blobs,snapshots/<commit>,refs/<revision>}``, so
``snapshot_download(local_files_only=True, cache_dir=models_dir)`` and
``hf download --cache-dir`` interoperate with it. Finding a snapshot needs no network;
installing one moves verified files into ``blobs/``, links them into the snapshot and
writes the ``refs`` file last, so a snapshot is only ever found complete. The bounded
download that fills it is :mod:`tts_actor.backends.model_manager`.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import uuid
from pathlib import Path

from tts_actor.backends.base import ModelRef
from tts_actor.backends.hub import RemoteFile

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def disk_free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path``."""
    return shutil.disk_usage(path).free


def repo_folder(models_dir: Path, repo_id: str) -> Path:
    """huggingface_hub's cache folder for a model repository."""
    return models_dir / ("models--" + repo_id.replace("/", "--"))


def find_snapshot(models_dir: Path, ref: ModelRef) -> Path | None:
    """The snapshot folder holding all of ``ref``'s files, or None. No network."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                allow_patterns=list(ref.allow_patterns) if ref.allow_patterns else None,
                cache_dir=models_dir,
                local_files_only=True,
            )
        )
    except Exception:  # not cached, or cached incompletely: both mean "download it"
        return None
    # the snapshot may hold another file set of the same repository (one backend, two models):
    # every pattern this ref asks for must match a file that is really there
    if ref.allow_patterns:
        present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        if not all(any(fnmatch.fnmatch(name, pattern) for name in present) for pattern in ref.allow_patterns):
            return None
    return folder


def install_snapshot(
    models_dir: Path, repo_id: str, revision: str, commit: str, staged: list[tuple[RemoteFile, Path]]
) -> Path:
    """Move verified files into huggingface_hub's layout; the ref goes last, marking the snapshot whole."""
    root = repo_folder(models_dir, repo_id)
    snapshot_dir = root / "snapshots" / commit
    for remote, part in staged:
        blob = root / "blobs" / remote.etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        link = snapshot_dir / remote.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks here (some Windows set-ups): a copy is what huggingface_hub does too
            shutil.copyfile(blob, link)
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    if not COMMIT_RE.match(revision):
        ref_file = root / "refs" / revision
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        temp = ref_file.with_name(f".{ref_file.name}.{uuid.uuid4().hex}")
        temp.write_text(commit)
        os.replace(temp, ref_file)
    return snapshot_dir
