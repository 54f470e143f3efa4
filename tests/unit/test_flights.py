"""Syntheses in progress on one instance: one leader per key, followers woken by what the leader adds."""

from __future__ import annotations

import asyncio
import time

import pytest

from tts_actor.audio.encoding import Timing
from tts_actor.synthesis.flights import FlightTable

TIMING = Timing(index=0, text_start=0, text_end=5, start_ms=0, end_ms=500)


async def test_followers_wake_on_each_part_and_on_the_file() -> None:
    table = FlightTable()
    flight = table.start("k", streamed=True)
    assert table.get("k") is flight
    waiter = asyncio.create_task(flight.wait_change(0, None))
    await asyncio.sleep(0)
    assert not waiter.done()
    flight.add(b"one", TIMING, {"Content-Type": "audio/wav"})
    await asyncio.wait_for(waiter, 1)
    flight.add(b"two", TIMING, {"Content-Type": "ignored: the first part's headers stay"})
    assert flight.first == {"Content-Type": "audio/wav"} and [p.data for p in flight.parts] == [b"one", b"two"]
    waiter = asyncio.create_task(flight.wait_change(2, None))
    flight.finish(b"file", {"Tts-Duration-Ms": "500"})
    await asyncio.wait_for(waiter, 1)
    flight.fail(RuntimeError("too late: settled"))
    assert flight.file == b"file" and flight.error is None


async def test_a_failed_flight_is_not_joined_and_a_newer_one_survives_the_old_ones_end() -> None:
    table = FlightTable()
    old = table.start("k", streamed=False)
    old.fail(RuntimeError("engine died"))
    assert table.get("k") is None  # the next request leads again
    new = table.start("k", streamed=False)
    table.end(old)
    assert table.get("k") is new
    table.end(new)
    assert table.get("k") is None and len(table) == 0


async def test_a_follower_stops_waiting_at_its_deadline() -> None:
    flight = FlightTable().start("k", streamed=False)
    with pytest.raises(TimeoutError):
        await flight.wait_change(0, time.monotonic() + 0.05)
