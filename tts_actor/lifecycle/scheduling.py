"""The actor's inbox: jobs by priority, handed to the runners one segment at a time, with an ageing rule.

A runner takes a job, runs its next segment and puts it back (:meth:`PriorityInbox.requeue`), so a long
``bulk`` job yields to waiting ``interactive`` work at its next segment boundary. Which job goes next:

* the highest class with waiting work (interactive, then normal, then bulk); within a class the job
  queued first, so a job partway through keeps its place and finishes before the next one of its class;
* ageing: a class that has waited TTS_PRIORITY_AGEING_S since its last segment ended (or since it began
  waiting) goes first for one segment, the longest-waiting such class first. Under a steady stream of
  interactive work, bulk still gets a segment every ageing period (it never starves), and interactive
  work waits at most one extra segment per period for it.

The depth limit (TTS_BACKEND_QUEUE_DEPTH) applies to new jobs only: a job partway through always goes back.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tts_actor.lifecycle.jobs import SynthesisJob
from tts_actor.observability import metrics
from tts_actor.wire.messages import PRIORITY_ORDER, Priority


@dataclass
class ClassStats:
    """One priority class's queue-wait totals: the wait before a job's first segment."""

    started: int = 0  # jobs whose first segment began
    waited_s: float = 0.0  # their queue waits, summed
    max_waited_s: float = 0.0

    @property
    def mean_wait_ms(self) -> float | None:
        return round(self.waited_s / self.started * 1000, 1) if self.started else None


@dataclass(order=True)
class _Entry:
    seq: int  # order of first arrival: a requeued job keeps it
    job: SynthesisJob = field(compare=False)
    since: float = field(compare=False)  # when it (last) entered the inbox


class PriorityInbox:
    """Waiting jobs of one backend, by priority class; ``get`` awaits the next one the rule picks."""

    def __init__(
        self, backend: str, maxsize: int, ageing_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backend = backend
        self.maxsize = maxsize
        self.ageing_s = ageing_s
        self._clock = clock
        self._heaps: dict[Priority, list[_Entry]] = {p: [] for p in PRIORITY_ORDER}
        self._class_since: dict[Priority, float | None] = dict.fromkeys(PRIORITY_ORDER)
        self._seq = itertools.count()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.stats: dict[Priority, ClassStats] = {p: ClassStats() for p in PRIORITY_ORDER}
        self.aged = 0  # segments handed out by the ageing rule ahead of a higher class

    # --- reading -----------------------------------------------------------------
    def qsize(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def empty(self) -> bool:
        return not self.qsize()

    def jobs(self) -> Iterator[SynthesisJob]:
        """Every waiting job, in no particular order."""
        for heap in self._heaps.values():
            yield from (entry.job for entry in heap)

    def ahead_of(self, priority: Priority) -> list[SynthesisJob]:
        """Jobs a new job of ``priority`` would wait behind: its own class and the higher ones."""
        return [e.job for p in PRIORITY_ORDER[: priority.rank + 1] for e in self._heaps[p]]

    def depths(self) -> dict[str, dict[str, object]]:
        """Per class: how many wait, the oldest one's wait so far, and the mean wait before a first segment."""
        now = self._clock()
        return {
            p.value: {
                "queued": len(heap),
                "oldest_wait_ms": round((now - min(e.since for e in heap)) * 1000, 1) if heap else 0.0,
                "mean_wait_ms": self.stats[p].mean_wait_ms,
                "started": self.stats[p].started,
            }
            for p, heap in self._heaps.items()
        }

    # --- putting -----------------------------------------------------------------
    def put_nowait(self, job: SynthesisJob) -> None:
        """A new job; raises :class:`asyncio.QueueFull` at TTS_BACKEND_QUEUE_DEPTH waiting jobs."""
        if self.qsize() >= self.maxsize:
            raise asyncio.QueueFull
        self._push(_Entry(next(self._seq), job, self._clock()))

    def served(self, priority: Priority) -> None:
        """A segment of ``priority`` ended: the class's ageing clock restarts (its own segment was no wait)."""
        self._class_since[priority] = self._clock() if self._heaps[priority] else None

    def requeue(self, job: SynthesisJob, seq: int) -> None:
        """A job partway through, back after its segment: its first place in its class, never refused."""
        self._push(_Entry(seq, job, self._clock()))

    def _push(self, entry: _Entry) -> None:
        priority = entry.job.priority
        heap = self._heaps[priority]
        if not heap and self._class_since[priority] is None:
            self._class_since[priority] = entry.since
        heapq.heappush(heap, entry)
        self._gauge(priority)
        self._wake_next()

    # --- taking ------------------------------------------------------------------
    async def get(self) -> tuple[SynthesisJob, int]:
        """The next job by the rule, and its place (to :meth:`requeue` it with); waits while none waits."""
        while self.empty():
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if not self.empty() and not getter.cancelled():
                    self._wake_next()
                raise
        return self.get_nowait()

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def get_nowait(self) -> tuple[SynthesisJob, int]:
        priority = self._pick()
        entry = heapq.heappop(self._heaps[priority])
        now = self._clock()
        self._class_since[priority] = now if self._heaps[priority] else None
        self._gauge(priority)
        if not entry.job.started:
            waited = now - entry.since
            stats = self.stats[priority]
            stats.started += 1
            stats.waited_s += waited
            stats.max_waited_s = max(stats.max_waited_s, waited)
            metrics.QUEUE_WAIT_SECONDS.labels(self.backend, priority.value).observe(waited)
        return entry.job, entry.seq

    def _pick(self) -> Priority:
        """The highest class waiting, unless a class has waited past the ageing bound (the longest first)."""
        waiting = [p for p in PRIORITY_ORDER if self._heaps[p]]
        if not waiting:
            raise asyncio.QueueEmpty
        now = self._clock()
        starved = [p for p in waiting[1:] if now - (self._class_since[p] or now) >= self.ageing_s]
        if starved:
            self.aged += 1
            return min(starved, key=lambda p: self._class_since[p] or now)
        return waiting[0]

    def drain(self, started_too: bool = True) -> list[SynthesisJob]:
        """Take every waiting job out (to answer them); ``started_too=False`` leaves jobs partway through."""
        taken: list[SynthesisJob] = []
        for priority, heap in self._heaps.items():
            keep = [e for e in heap if e.job.started and not started_too]
            taken.extend(e.job for e in heap if not (e.job.started and not started_too))
            heapq.heapify(keep)
            self._heaps[priority] = keep
            self._class_since[priority] = self._class_since[priority] if keep else None
            self._gauge(priority)
        return taken

    def _gauge(self, priority: Priority) -> None:
        metrics.QUEUE_DEPTH.labels(self.backend, priority.value).set(len(self._heaps[priority]))
