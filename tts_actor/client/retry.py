"""When a caller sends a synthesis again: which errors, and after how long (pure policy, no I/O).

The service answers ``busy``, ``backend_not_ready`` and ``deadline_unreachable`` at once with a ``retry_after_ms``
(admission stays fast for callers that do not retry); a client that honours it turns a burst
into a queue. The wait is the service's ``retry_after_ms`` plus full jitter over a window that
doubles with each attempt, capped, so that a burst of refused callers does not come back in step.

A client also keeps a :class:`RetryBudget`: its retries may add at most ``ratio`` (20%) to its
first attempts, plus a floor of ``floor_per_s`` retries a second, so that an overloaded service
is not sent a multiple of its load. A retry beyond the budget waits for the floor to pay for it,
within the caller's deadline; when that is too late the caller gets the service's error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tts_actor.errors import ErrorCode, TtsError

# deadline_unreachable: this instance could not meet the deadline now; the retry may land on another one
RETRYABLE_CODES = frozenset({ErrorCode.BUSY, ErrorCode.BACKEND_NOT_READY, ErrorCode.DEADLINE_UNREACHABLE})


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


@dataclass
class RetryBudget:
    """A token bucket per client: a first attempt deposits ``ratio``, time adds ``floor_per_s``, a retry costs 1."""

    ratio: float = 0.2
    floor_per_s: float = 10.0
    max_tokens: float = 50.0  # what quiet time and first attempts can bank for a later burst of retries
    clock: Callable[[], float] = time.monotonic
    tokens: float = 10.0  # a new client may retry a little at once
    _at: float | None = field(default=None, repr=False)

    def deposit(self) -> None:
        """A first attempt: retries may grow by ``ratio`` of it."""
        self._refill()
        self.tokens = min(self.max_tokens, self.tokens + self.ratio)

    def reserve(self, latest_s: float) -> float | None:
        """Seconds until a retry is paid for (the token is taken now); None, taking nothing, when over ``latest_s``.

        Tokens may go below zero: the floor's future income is then spoken for, in order.
        """
        self._refill()
        wait = 0.0 if self.tokens >= 1 - 1e-9 else (1 - self.tokens) / self.floor_per_s  # 5 x 0.2 is a whole token
        if wait > latest_s:
            return None
        self.tokens -= 1
        return wait

    def _refill(self) -> None:
        now = self.clock()
        if self._at is not None:
            self.tokens = min(self.max_tokens, self.tokens + (now - self._at) * self.floor_per_s)
        self._at = now
