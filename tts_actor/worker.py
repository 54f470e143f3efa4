"""A single daemon worker thread per backend, usable as an asyncio executor.

Engine calls (load, synthesize, unload) can block for a long time, or forever
when a model hangs. ``ThreadPoolExecutor`` threads are joined at interpreter
exit, so one hung call would keep the process alive after Ctrl-C; a daemon
thread does not. Calls run one at a time, in submission order, which is what
the engines (rarely thread-safe) need.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonWorker(Executor):
    """One daemon thread running submitted calls in order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("worker is shut down")
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        for job in iter(self._jobs.get, None):
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the thread to finish its last call; whether it did."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
