"""Syntheses in progress on this instance, by audio cache key: what a request for the same audio joins.

One request (the leader) synthesizes and feeds its :class:`Flight`: a stream's parts as they are encoded,
then the whole file and the headers that describe it. Requests for the same key that arrive meanwhile
follow the flight instead of starting another synthesis (:mod:`tts_actor.synthesis.joining`): a streamed
one replays the parts so far and follows, a whole one waits for the file. The flight stays in the table
until the file is in the audio cache, so a request a moment after the reply still joins it. Pure asyncio.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tts_actor.audio.encoding import Timing


class FlightFailed(Exception):
    """The leader stopped without a file (error, cancel, shutdown): a joiner that sent nothing yet tries again."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


@dataclass(frozen=True)
class Part:
    data: bytes
    timing: Timing


@dataclass
class Flight:
    """One synthesis in progress and what it produced so far."""

    key: str
    streamed: bool  # the leader streams: its parts can be replayed
    first: dict[str, str] = field(default_factory=dict)  # the first message's headers (backend, voice, format)
    parts: list[Part] = field(default_factory=list)
    file: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # once finished: what a cached copy keeps
    error: BaseException | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def settled(self) -> bool:
        return self.file is not None or self.error is not None

    def add(self, data: bytes, timing: Timing, first: dict[str, str]) -> None:
        if not self.first:
            self.first = first
        self.parts.append(Part(data, timing))
        self._notify()

    def finish(self, file: bytes, headers: dict[str, str]) -> None:
        if not self.settled:
            self.file, self.headers = file, headers
            self._notify()

    def fail(self, error: BaseException) -> None:
        if not self.settled:
            self.error = error
            self._notify()

    async def wait_change(self, seen_parts: int, deadline: float | None) -> None:
        """Until there are more than ``seen_parts`` parts or the flight settled; TimeoutError past ``deadline``
        (``time.monotonic()``)."""
        while len(self.parts) <= seen_parts and not self.settled:
            changed = self._changed
            if deadline is None:
                await changed.wait()
            else:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class FlightTable:
    """The flights of this instance by key; start and get are synchronous, so two requests never both lead."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: str) -> Flight | None:
        flight = self._flights.get(key)
        return None if flight is None or flight.error is not None else flight

    def start(self, key: str, streamed: bool) -> Flight:
        flight = self._flights[key] = Flight(key, streamed)
        return flight

    def end(self, flight: Flight) -> None:
        """Out of the table (stored, or failed); a newer flight of the same key stays."""
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
