"""What an instance remembers of recent erasures: who wants to hear of them, and which clips to refuse a while.

An erasure (this instance's or another's, heard on the fleet's stream) is told to every listener (a copy of
cached audio in memory drops those keys). For :data:`GUARD_S` after it, audio from that clip is refused: a
synthesis that was running during the delete must not put the voice back into the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tts_actor.observability.logs import get_logger

log = get_logger(__name__)
GUARD_S = 60.0  # after an erasure, audio from that clip is refused for this long (syntheses that were running)
EraseListener = Callable[[str, tuple[str, ...]], None]


class ErasureNotice:
    """The listeners to erasures, and the clips erased less than :data:`GUARD_S` ago."""

    def __init__(self) -> None:
        self._listeners: list[EraseListener] = []
        self._erased_at: dict[str, float] = {}  # reference digest -> when it was erased (epoch s)

    def listen(self, listener: EraseListener) -> None:
        self._listeners.append(listener)

    def note(self, digest: str, keys: tuple[str, ...], at: float) -> None:
        """Remember the erasure (``at``: when it was made, epoch s) and tell every listener."""
        if time.time() - at < GUARD_S:
            self._erased_at[digest] = at
        for listener in self._listeners:
            try:
                listener(digest, keys)
            except Exception as exc:  # one listener's bug must not keep the others from forgetting
                log.warning("audio_cache_erase_listener_failed", error=repr(exc))

    def guarded(self, digest: str) -> bool:
        """Erased less than :data:`GUARD_S` ago: its audio must not be stored."""
        now = time.time()
        for old in [d for d, at in self._erased_at.items() if now - at >= GUARD_S]:
            del self._erased_at[old]
        return digest in self._erased_at
