"""Model files from the Hugging Face hub: local cache first, then a bounded download."""

from __future__ import annotations

import asyncio
from pathlib import Path

from statemachine import Reason
from tts_actor.backends.base import BackendFailure, ModelRef
from tts_actor.config import Settings

ProgressCallback = "Callable[[int, int | None], None]"


class ModelManager:
    """Finds and fetches backend models into ``settings.models_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def find_local(self, refs: tuple[ModelRef, ...]) -> dict[str, Path] | None:
        from huggingface_hub import snapshot_download

        dirs: dict[str, Path] = {}
        for ref in refs:
            try:
                dirs[ref.key] = Path(
                    snapshot_download(
                        ref.repo_id,
                        revision=ref.revision,
                        allow_patterns=ref.allow_patterns,
                        cache_dir=self.settings.models_dir,
                        local_files_only=True,
                    )
                )
            except Exception:
                return None
        return dirs

    async def fetch(self, backend: str, refs: tuple[ModelRef, ...], on_progress: object) -> dict[str, Path]:
        await asyncio.sleep(0)
        raise BackendFailure(Reason.DOWNLOAD_FAILED, f"{backend}: download not implemented yet", "n/a")
