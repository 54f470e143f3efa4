"""The client's retry budget: retries add at most 20% over first attempts plus a floor a second."""

from __future__ import annotations

import pytest

from tts_actor.client.retry import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_retries_spends_the_bank_then_waits_for_the_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=10.0, tokens=0.0, clock=clock)
    for _ in range(100):
        budget.deposit()  # 100 first attempts: 20 retries paid for
    waits = [budget.reserve(latest_s=60) for _ in range(25)]
    assert waits[:20] == [0.0] * 20
    assert waits[20:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # then one every 1/floor_per_s, in order


def test_a_retry_the_floor_cannot_pay_before_the_deadline_is_refused_and_takes_nothing() -> None:
    clock = Clock()
    budget = RetryBudget(floor_per_s=10.0, tokens=0.0, clock=clock)
    assert budget.reserve(latest_s=0.05) is None
    assert budget.tokens == 0.0
    assert budget.reserve(latest_s=0.2) == pytest.approx(0.1)


def test_quiet_time_refills_up_to_the_cap() -> None:
    clock = Clock()
    budget = RetryBudget(floor_per_s=10.0, max_tokens=50.0, tokens=0.0, clock=clock)
    budget.reserve(latest_s=60)
    clock.now += 3600
    budget.deposit()
    assert budget.tokens == 50.0


def test_over_a_long_overload_retries_stay_within_ratio_plus_floor() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=10.0, max_tokens=50.0, clock=clock)
    sent = 0
    for _ in range(600):  # 60 s: 100 first attempts a second, each refused and retried at once when paid for
        clock.now += 0.1
        for _ in range(10):
            budget.deposit()
            if budget.reserve(latest_s=0.0) is not None:
                sent += 1
    assert sent <= 0.2 * 6000 + 10 * 60 + 10 + 50
    assert sent >= 0.2 * 6000 + 10 * 60 - 10
