"""``tts-actor fetch``: pre-download backends' models with a progress bar, without NATS.

For image builds and air-gapped hosts: run it where the hub is reachable, ship
TTS_CACHE_DIR, and the service then loads from the cache with HF_HUB_OFFLINE=1.
Same manager, same bounds and checks as the service; exits non-zero on failure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from tqdm import tqdm

from tts_actor.backends import ADAPTERS
from tts_actor.backends.base import BackendFailure
from tts_actor.backends.model_manager import ModelManager
from tts_actor.config import Settings


async def fetch_backends(settings: Settings, names: Sequence[str], out: TextIO = sys.stderr) -> int:
    """Fetch every named backend's models; 0 when all are in the cache afterwards, else 1."""
    manager = ModelManager(settings)
    failed = 0
    try:
        for name in names:
            refs = ADAPTERS[name](settings).models()
            if not refs:
                print(f"{name}: no hub models to fetch", file=out)
                continue
            repos = ", ".join(r.repo_id for r in refs)
            with tqdm(desc=f"{name} ({repos})", unit="B", unit_scale=True, unit_divisor=1024, file=out) as bar:

                def on_progress(done: int, total: int | None, bar: tqdm = bar) -> None:
                    if total is not None and bar.total != total:
                        bar.total = total
                    bar.update(done - bar.n)

                try:
                    dirs = await manager.fetch(name, refs, on_progress)
                except BackendFailure as failure:
                    bar.close()
                    print(f"{name}: failed [{failure.reason.value}]: {failure.message}\nfix: {failure.fix}", file=out)
                    failed += 1
                    continue
            for key, path in dirs.items():
                print(f"{name}: {key} -> {path}", file=out)
    finally:
        await manager.close()
    return 1 if failed else 0
