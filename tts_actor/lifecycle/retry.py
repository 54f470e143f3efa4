"""When a failed backend is brought up again on its own: exponential backoff with a cap.

Pure policy; the actor arms one ``loop.call_later`` timer with the delay it gives.
Only failures that time can heal are retried automatically: a missing package,
a gated repository or offline mode stay failed until someone changes something
(and then `tts-actor retry <backend>` brings the backend up at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from statemachine import Reason
from tts_actor.config import Settings

AUTO_RETRY_REASONS = frozenset(
    {
        Reason.HUB_UNREACHABLE,
        Reason.DOWNLOAD_STALLED,
        Reason.DOWNLOAD_FAILED,
        Reason.CORRUPT_MODEL,
        Reason.DISK_FULL,
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float
    max_s: float
    max_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.retry_backoff_initial_s, settings.retry_backoff_max_s, settings.retry_max_attempts)

    @staticmethod
    def retries(reason: Reason) -> bool:
        return reason in AUTO_RETRY_REASONS

    def delay(self, attempt: int) -> float | None:
        """Seconds before automatic attempt ``attempt`` (1-based), or None once attempts are used up."""
        if attempt < 1 or attempt > self.max_attempts:
            return None
        return min(self.initial_s * 2 ** (attempt - 1), self.max_s)
