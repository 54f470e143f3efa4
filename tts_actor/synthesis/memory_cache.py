"""Hot cached files in this instance's memory, in front of the object store: a hit without a round trip.

Bounded by bytes (``TTS_AUDIO_CACHE_MEMORY_BYTES``), least recently used out first. An entry never outlives
the object store's: it carries the time the store ages it out (its TTL from the object's mtime), and
:class:`~tts_actor.synthesis.audio_cache.AudioCache` drops it when the store says the object or the bucket
went (:meth:`MemoryCache.invalidate`, :meth:`MemoryCache.clear`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from tts_actor.observability import metrics


@dataclass(frozen=True)
class MemoryEntry:
    data: bytes
    headers: dict[str, str]
    expires_at: float  # time.monotonic()


class MemoryCache:
    """A byte-bounded LRU of ``key -> (file, headers)``; no I/O, no locks (one event loop)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, MemoryEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> MemoryEntry | None:
        """The entry, freshened as most recently used; None when absent or past the store's TTL."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry.expires_at:
            self.invalidate(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, data: bytes, headers: dict[str, str], ttl_s: float) -> None:
        """Keep a file for at most ``ttl_s``; one bigger than a quarter of the bound is not kept (it would churn)."""
        if not data or len(data) * 4 > self.max_bytes or ttl_s <= 0:
            return
        self.invalidate(key)
        self._entries[key] = MemoryEntry(data, headers, time.monotonic() + ttl_s)
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= len(old.data)
        metrics.AUDIO_CACHE_MEMORY_BYTES.set(self.bytes)

    def invalidate(self, key: str) -> bool:
        """Forget one key (its object went, or its voice was erased); True when it was here."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= len(entry.data)
        metrics.AUDIO_CACHE_MEMORY_BYTES.set(self.bytes)
        return True

    def clear(self) -> None:
        """Forget everything (the bucket was deleted or purged)."""
        self._entries.clear()
        self.bytes = 0
        metrics.AUDIO_CACHE_MEMORY_BYTES.set(0)
