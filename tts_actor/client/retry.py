"""When a caller sends a synthesis again: which errors, and after how long (pure policy, no I/O).

The service answers ``busy`` and ``backend_not_ready`` at once with a ``retry_after_ms``
(admission stays fast for callers that do not retry); a client that honours it turns a burst
into a queue. The wait is the service's ``retry_after_ms`` plus full jitter over a window that
doubles with each attempt, capped, so that a burst of refused callers does not come back in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tts_actor.errors import ErrorCode, TtsError

RETRYABLE_CODES = frozenset({ErrorCode.BUSY, ErrorCode.BACKEND_NOT_READY})


@dataclass(frozen=True)
class ClientRetryPolicy:
    default_after_ms: int = 250  # when the error names no retry_after_ms
    max_after_ms: int = 5_000  # a server's retry_after_ms is honoured up to this
    jitter_cap_ms: int = 2_000  # the random part never exceeds this

    @staticmethod
    def retryable(error: TtsError) -> bool:
        """Errors time can heal; ``backend_not_ready`` only when the service says when to come back.

        No listening instance at all (NATS 503) is not retried: that is an operator's problem, told at once.
        """
        if type(error).__name__ == "NoResponders" or error.code not in RETRYABLE_CODES:
            return False
        return error.retry_after_ms is not None

    def delay_s(self, error: TtsError, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        after = min(self.max_after_ms, error.retry_after_ms or self.default_after_ms)
        window = min(self.jitter_cap_ms, max(1, after) * 2 ** min(attempt, 16))
        return (after + (rng or random).uniform(0, window)) / 1000
