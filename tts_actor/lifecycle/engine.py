"""The backend's adapter behind its own worker thread(s): every blocking engine call goes through here.

Bring-up (load), the job runner (synthesize) and unloading share one :class:`DaemonWorker`,
so calls to an engine that is not thread-safe run one at a time, in order, and never on the
event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any

import structlog

from tts_actor.backends.base import BackendAdapter
from tts_actor.lifecycle.worker import DaemonWorker


class Engine:
    """Runs ``adapter``'s blocking calls on ``threads`` daemon threads of its own."""

    def __init__(self, adapter: BackendAdapter, threads: int, log: structlog.stdlib.BoundLogger) -> None:
        self.adapter = adapter
        self.worker = DaemonWorker(f"tts-{adapter.name}", threads)
        self._log = log

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking ``fn`` on the worker, in the caller's context (its span)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.worker, call)

    def release(self, why: str) -> None:
        """On the worker thread: drop the engine's model after a failure, so nothing stays resident."""
        try:
            self.adapter.unload()
            self._log.info("model_released", why=why)
        except Exception as exc:  # already failed; the log says what else went wrong
            self._log.warning("model_release_failed", why=why, error=repr(exc))

    def release_later(self, why: str) -> None:
        """Queue :meth:`release` behind the call the worker is in (one that cannot be interrupted)."""
        self.worker.submit(self.release, why)

    def close(self) -> None:
        """Take no more calls; drop those queued."""
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the call in progress to end; whether it did."""
        return await asyncio.to_thread(self.worker.join, timeout_s)
