"""How long a caller still waits, read at receipt: no work for callers who left (pure, no clock of its own).

``deadline_ms`` in the body counts from receipt, so a request that sat in a disconnected
client's buffer (nats-py flushes it on reconnect) still looks fresh. The client therefore also
sends ``Tts-Deadline`` (unix epoch ms when it stops caring) and ``Tts-Sent-At`` (epoch ms when
this attempt left it). Clocks differ between hosts: both are read with ``skew_ms`` of tolerance
in the caller's favour, and a header that is absent or not a plausible epoch (a plain
``nats req``, a typo) is ignored, so such requests behave as before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header

HORIZON_MS = 24 * 3600 * 1000  # an epoch further than this from our clock is garbage, not a deadline
_EPOCH_MS = re.compile(r"^[0-9]{1,16}$")


class LateRequest(TtsError):
    """The caller's deadline passed before its request arrived: nobody waits for this audio."""


def now_epoch_ms() -> int:
    """Wall-clock unix time in ms: what ``Tts-Deadline`` and ``Tts-Sent-At`` carry (the monotonic clock is ours)."""
    return time.time_ns() // 1_000_000


def header_epoch_ms(headers: Mapping[str, str] | None, header: Header, now_ms: int) -> int | None:
    """``header`` as unix epoch ms, or None when absent or implausible (not digits, over a day from now)."""
    raw = (headers or {}).get(header.value, "").strip()
    if not _EPOCH_MS.match(raw):
        return None
    value = int(raw)
    return value if abs(value - now_ms) <= HORIZON_MS else None


def remaining_budget_ms(
    headers: Mapping[str, str] | None, deadline_ms: int | None, now_ms: int, skew_ms: int
) -> int | None:
    """Milliseconds from ``now_ms`` the caller still waits; None when it named no deadline at all.

    The tightest of: the caller's ``Tts-Deadline`` (plus ``skew_ms``), and the body's ``deadline_ms``
    less the time since ``Tts-Sent-At`` beyond ``skew_ms``. Raises :class:`LateRequest`
    (``synthesis_timeout``) when the headers show the caller stopped waiting before now. Without
    the headers the body's ``deadline_ms`` is returned as it is (the service's old reading).
    """
    caller_deadline = header_epoch_ms(headers, Header.DEADLINE, now_ms)
    sent_at = header_epoch_ms(headers, Header.SENT_AT, now_ms)
    budgets: list[int] = []
    if caller_deadline is not None:
        budgets.append(caller_deadline + skew_ms - now_ms)
    if deadline_ms is not None:
        waited = max(0, now_ms - sent_at - skew_ms) if sent_at is not None else 0
        budgets.append(deadline_ms - waited)
    if not budgets:
        return None
    remaining = min(budgets)
    if remaining <= 0 and (caller_deadline is not None or sent_at is not None):
        raise late(-remaining, None if sent_at is None else now_ms - sent_at)
    return remaining


def late(late_ms: int, age_ms: int | None) -> LateRequest:
    """The refusal for a request whose caller's deadline passed ``late_ms`` before it arrived."""
    sent = "" if age_ms is None else f", sent {age_ms} ms ago"
    return LateRequest(
        ErrorCode.SYNTHESIS_TIMEOUT,
        f"the caller's deadline passed {late_ms} ms before the request arrived{sent}; it was not started",
        "Nothing to do if the caller gave up; otherwise check its NATS connection (a request sent while it was "
        "down waits in its buffer) and that its clock agrees with the service's within TTS_CLOCK_SKEW_MS.",
        detail={"late_ms": late_ms, **({"age_ms": age_ms} if age_ms is not None else {})},
    )
