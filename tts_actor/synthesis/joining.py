"""Answers that need no backend: a file from the audio cache, or a join to a synthesis in progress.

:func:`answer_file` sends a stored file whole or as a stream (``Tts-Cache: hit``, or ``joined`` when the file
came from a synthesis this request waited for). :func:`answer_flight` follows a
:class:`~tts_actor.synthesis.flights.Flight`: a streamed caller gets the leader's stream from where it is (the
parts so far replayed, then each one as it comes), a whole one the file once it exists.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from tts_actor.audio import waveform
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.jobs import JobControl
from tts_actor.lifecycle.registry import Route
from tts_actor.synthesis.flights import Flight, FlightFailed
from tts_actor.wire.framing import Framer
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest, Timings
from tts_actor.wire.replies import parse_timings

TOTALS = (Header.DURATION_MS, Header.SEGMENT_COUNT, Header.TIMINGS, Header.WAVEFORM)  # on a stream's end message
# the waveform a cached file keeps: 256 points, reduced to what each answer asks for
CACHED_WAVEFORM = f"{Header.WAVEFORM.value}-{waveform.CACHED_POINTS}"
# the word timings JSON a file of a timings=word request keeps beside its headers (never a header on the wire)
WORD_TIMINGS_KEPT = "word-timings"


def _described(stored: Mapping[str, str], request: SynthesisRequest) -> dict[str, str]:
    """A stored file's headers as this request's reply: marked synthetic, its waveform at the points it asked for."""
    headers = dict(stored) | {Header.SYNTHETIC.value: "true"}
    headers.pop(WORD_TIMINGS_KEPT, None)  # sent as the timings parts (:func:`_word_timings`), not as a header
    fine = headers.pop(CACHED_WAVEFORM, None)
    if fine:
        points = waveform.fewer_points(waveform.decode(fine), request.waveform_points)
        headers[Header.WAVEFORM.value] = waveform.encode(points)
    return headers


async def answer_file(
    framer: Framer,
    data: bytes,
    stored: Mapping[str, str],
    request: SynthesisRequest,
    route: Route,
    started: float,
    outcome: str,
) -> None:
    """A whole file as the reply: whole, or as a stream with its end message."""
    headers = _described(stored, request)
    headers[Header.CACHE.value] = outcome
    if route.fallback_from:
        headers[Header.FALLBACK_FROM.value] = route.fallback_from
    if not request.stream:
        await _word_timings(framer, stored, request)  # as a synthesized reply sends them: before a file's audio
        framer.first = headers
        await framer.whole(data, {})
        return
    totals = {k.value: headers.pop(k.value) for k in TOTALS if k.value in headers}
    framer.first = headers
    await _stream_file(framer, data, parse_timings(totals), int(totals.get(Header.DURATION_MS.value) or 0))
    await _word_timings(framer, stored, request)  # and before a stream's end message
    await framer.end(totals | {Header.CACHE.value: outcome, Header.FIRST_AUDIO_MS.value: _ms_since(started)})


async def answer_flight(
    framer: Framer, flight: Flight, request: SynthesisRequest, route: Route, started: float, control: JobControl
) -> bool:
    """Answer from a synthesis in progress; False when its leader failed before anything was sent (try again).

    Bounded by the request's own deadline: past it, its ``synthesis_timeout``.
    """
    sent = 0
    try:
        while True:
            if request.stream and flight.streamed and flight.parts:
                sent = await _follow(framer, flight, request, route, sent)
            if flight.error is not None:
                raise FlightFailed(flight.error)
            if flight.file is not None:
                break
            following = request.stream and flight.streamed
            await flight.wait_change(sent if following else len(flight.parts), control.deadline)
    except TimeoutError:
        raise control.stop_error() or _late(control) from None
    except FlightFailed as failed:
        if not framer.messages:
            return False
        error = failed.error
        raise (
            error
            if isinstance(error, TtsError)
            else TtsError(
                ErrorCode.INTERNAL, f"the synthesis this stream joined failed: {type(error).__name__}", "Send it again."
            )
        ) from None
    if framer.messages:  # the leader's stream, followed to its end
        described = _described(flight.headers, request)
        totals = {k.value: described[k.value] for k in TOTALS if k.value in described}
        await _word_timings(framer, flight.headers, request)
        await framer.end(
            totals | {Header.CACHE.value: "joined", Header.FIRST_AUDIO_MS.value: _first_ms(framer, started)}
        )
    else:
        await answer_file(framer, flight.file, flight.headers, request, route, started, "joined")
    return True


async def _word_timings(framer: Framer, stored: Mapping[str, str], request: SynthesisRequest) -> None:
    """The timings parts of a file made for timings=word (its key is its own: only such requests get here)."""
    words = stored.get(WORD_TIMINGS_KEPT)
    if words is not None and request.timings is Timings.WORD:
        await framer.timings(words.encode())


async def _follow(framer: Framer, flight: Flight, request: SynthesisRequest, route: Route, sent: int) -> int:
    """The leader's parts from ``sent`` on, through this request's own framer (its id, its first headers)."""
    if not framer.messages:
        first = dict(flight.first) | {Header.CACHE.value: "joined"}
        if route.fallback_from:
            first[Header.FALLBACK_FROM.value] = route.fallback_from
        framer.first = first
    for part in flight.parts[sent:]:
        timing = part.timing
        segment = {
            Header.SEGMENT_INDEX.value: str(timing.index),
            Header.SEGMENT_START_MS.value: str(timing.start_ms),
            Header.SEGMENT_END_MS.value: str(timing.end_ms),
        }
        await framer.stream(part.data, segment)
        sent += 1
    return sent


async def _stream_file(framer: Framer, data: bytes, timings: list[dict[str, int]], duration_ms: int) -> None:
    """A cached file as a stream: max_payload-sized messages, each naming the segment its bytes mostly belong to
    (by position: a cached file has no segment boundaries in bytes).
    """
    offset = 0
    while offset < len(data):
        position_ms = duration_ms * offset / len(data)
        timing = next((t for t in timings if t["end_ms"] > position_ms), timings[-1] if timings else None)
        headers: dict[str, str] = {}
        if timing is not None:
            headers = {
                Header.SEGMENT_INDEX.value: str(timing["index"]),
                Header.SEGMENT_START_MS.value: str(timing["start_ms"]),
                Header.SEGMENT_END_MS.value: str(timing["end_ms"]),
            }
        room = framer.room(headers)
        await framer.stream(data[offset : offset + room], headers)
        offset += room


def _late(control: JobControl) -> TtsError:
    return TtsError(
        ErrorCode.SYNTHESIS_TIMEOUT,
        f"the request's deadline_ms={control.deadline_ms} passed while it waited for the same synthesis",
        "Send a larger deadline_ms, or cache: false to synthesize on its own.",
    )


def _first_ms(framer: Framer, started: float) -> str:
    return str(round(((framer.first_sent_at or time.perf_counter()) - started) * 1000))


def _ms_since(started: float) -> str:
    return str(round((time.perf_counter() - started) * 1000))
