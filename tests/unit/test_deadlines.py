"""The caller's deadline read at receipt (``wire/deadlines.py``): late requests refused, garbage ignored."""

from __future__ import annotations

import pytest

from tts_actor.config import Settings, load_settings
from tts_actor.errors import ErrorCode
from tts_actor.wire.deadlines import LateRequest, remaining_budget_ms
from tts_actor.wire.headers import Header

NOW = 1_800_000_000_000  # epoch ms
SKEW = 2000


def headers(deadline: int | None = None, sent_at: int | None = None) -> dict[str, str]:
    found = {Header.REQUEST_ID.value: "r1"}
    if deadline is not None:
        found[Header.DEADLINE.value] = str(deadline)
    if sent_at is not None:
        found[Header.SENT_AT.value] = str(sent_at)
    return found


def test_a_plain_request_keeps_the_old_reading() -> None:
    assert remaining_budget_ms(None, None, NOW, SKEW) is None
    assert remaining_budget_ms({}, 5000, NOW, SKEW) == 5000
    assert remaining_budget_ms({}, 0, NOW, SKEW) == 0  # deadline_ms=0 alone: the runner answers it, as before


def test_a_fresh_request_gets_the_tighter_of_body_and_header() -> None:
    assert remaining_budget_ms(headers(NOW + 30_000, NOW - 10), 29_990, NOW, SKEW) == 29_990
    assert remaining_budget_ms(headers(NOW + 3000, NOW - 10), 29_990, NOW, SKEW) == 3000 + SKEW
    assert remaining_budget_ms(headers(NOW + 3000), None, NOW, SKEW) == 3000 + SKEW


def test_a_request_that_sat_in_a_buffer_past_its_deadline_is_late() -> None:
    # sent 40 s ago with 30 s to go: the body alone would look fresh
    with pytest.raises(LateRequest) as caught:
        remaining_budget_ms(headers(NOW - 10_000, NOW - 40_000), 30_000, NOW, SKEW)
    error = caught.value
    assert error.code is ErrorCode.SYNTHESIS_TIMEOUT
    assert "deadline passed" in error.message and "sent 40000 ms ago" in error.message
    assert error.detail == {"late_ms": 10_000 - SKEW, "age_ms": 40_000}
    assert error.fix


def test_sent_at_alone_shortens_the_body_budget() -> None:
    assert remaining_budget_ms(headers(sent_at=NOW - 12_000), 30_000, NOW, SKEW) == 30_000 - 10_000
    with pytest.raises(LateRequest):
        remaining_budget_ms(headers(sent_at=NOW - 33_000), 30_000, NOW, SKEW)


def test_clock_skew_within_the_tolerance_is_forgiven() -> None:
    # the caller's clock is 1.5 s behind ours: its deadline reads as just passed, its send as long ago
    assert remaining_budget_ms(headers(NOW - 1500, NOW - 1600), 100, NOW, SKEW) == 100
    with pytest.raises(LateRequest):
        remaining_budget_ms(headers(NOW - 2500), None, NOW, SKEW)
    assert remaining_budget_ms(headers(NOW - 2500), None, NOW, 5000) == 2500


GARBAGE = ["", "soon", "-5", "1.5e12", "12 34", "\uff19\uff19", "9" * 40, str(NOW - 2 * 86_400_000)]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_headers_are_ignored(raw: str) -> None:
    sent = {Header.DEADLINE.value: raw, Header.SENT_AT.value: raw}
    assert remaining_budget_ms(sent, 4000, NOW, SKEW) == 4000
    assert remaining_budget_ms(sent, None, NOW, SKEW) is None


def test_the_skew_tolerance_is_a_setting() -> None:
    assert Settings().clock_skew_ms == 2000
    assert load_settings({"TTS_CLOCK_SKEW_MS": "500"}).clock_skew_ms == 500
