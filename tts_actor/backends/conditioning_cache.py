"""A bounded LRU of computed voice conditioning (Chatterbox conditionals, XTTS latents) per profile.

The translator clones one sender's voice into several target languages per message: the
analysis of the clip is the same each time, so each cloning backend keeps the result here,
keyed by the profile's audio digest, and the second language reuses it. Bounded by entry
count, because a conditioning's size is the engine's business; thread-safe, because the
engines run on their worker threads.

When a voice is erased (:meth:`ConditioningCache.discard_reference`), a synthesis that resolved its clip
before the delete may still be running (a stream's later segments): for :data:`FORGOTTEN_GUARD_S` the
cache does not keep what is computed from that clip again, so the erasure is not undone behind it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
FORGOTTEN_GUARD_S = 600.0  # longer than a synthesis that was running during an erasure goes on


class ConditioningCache(Generic[V]):
    """Least recently used entries go first once ``max_entries`` are held."""

    def __init__(self, max_entries: int = 32) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._forgotten: dict[str, float] = {}  # clip digest -> when it was discarded (monotonic s)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            if key not in self._entries:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value``; not when it was made from a clip discarded less than FORGOTTEN_GUARD_S ago."""
        with self._lock:
            forgotten = self._forgotten.get(_digest(key))
            if forgotten is not None and time.monotonic() - forgotten < FORGOTTEN_GUARD_S:
                return
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> tuple[V, bool]:
        """The cached value and True, or ``compute()`` (outside the lock, then kept) and False."""
        cached = self.get(key)
        if cached is not None:
            return cached, True
        value = compute()
        self.put(key, value)
        return value, False

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def discard_reference(self, digest: str) -> int:
        """Drop every entry made from the clip ``digest`` (keys are tuples ending in it); how many went.

        For FORGOTTEN_GUARD_S nothing made from it is kept again (a synthesis that was running during the erasure).
        """
        with self._lock:
            now = time.monotonic()
            for old in [d for d, at in self._forgotten.items() if now - at >= FORGOTTEN_GUARD_S]:
                del self._forgotten[old]
            self._forgotten[digest] = now
            doomed = [k for k in self._entries if k == digest or (isinstance(k, tuple) and k and k[-1] == digest)]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        """On unload: the conditioning belongs to the model that made it."""
        with self._lock:
            self._entries.clear()


def _digest(key: Hashable) -> object:
    """The clip digest a key was made from: the key itself, or the last item of a tuple key."""
    return key[-1] if isinstance(key, tuple) and key else key
