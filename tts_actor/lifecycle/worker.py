"""Daemon worker threads per backend (one, or TTS_<BACKEND>_WORKERS), usable as an asyncio executor.

Engine calls (load, synthesize, unload) can block for a long time, or forever
when a model hangs. ``ThreadPoolExecutor`` threads are joined at interpreter
exit, so one hung call would keep the process alive after Ctrl-C; a daemon
thread does not. With one thread, calls run one at a time, in submission order,
which is what the engines (rarely thread-safe) need; engines that allow several
sessions get as many threads, taking calls from the same queue.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonWorker(Executor):
    """``threads`` daemon threads running submitted calls from one queue, in order."""

    def __init__(self, name: str, threads: int = 1) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}" if threads > 1 else name, daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

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
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the threads to finish their last calls; whether they did."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)
