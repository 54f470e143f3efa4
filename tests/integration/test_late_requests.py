"""Requests whose caller already gave up (``Tts-Deadline`` passed, or sent long ago) cost no engine time.

After a NATS outage, nats-py flushes what it buffered: requests whose callers left long ago. The
service reads the caller's absolute deadline and send time and refuses those at receipt.
"""

from __future__ import annotations

import json
import time

from nats.aio.client import Client
from prometheus_client import REGISTRY

from tts_actor.app import TtsApp
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest


def _dropped_late() -> float:
    return REGISTRY.get_sample_value("tts_dropped_late_total", {"backend": "-"}) or 0.0


async def test_a_request_past_its_callers_deadline_is_refused_at_receipt_without_an_engine_call(
    piper_loaded: TtsApp, nc: Client
) -> None:
    assert piper_loaded.registry is not None
    piper = piper_loaded.registry.actors["piper"]
    calls, dropped = piper.engine_calls, _dropped_late()
    now_ms = time.time_ns() // 1_000_000
    stale = {  # sent 40 s ago by a caller who waited 30 s
        Header.DEADLINE.value: str(now_ms - 10_000),
        Header.SENT_AT.value: str(now_ms - 40_000),
        Header.REQUEST_ID.value: "stale-1",
    }
    started = time.perf_counter()
    reply = await nc.request("tts.synthesize", SynthesisRequest(text="Nobody waits.").to_json(), 5, headers=stale)
    assert time.perf_counter() - started < 1.0
    assert reply.headers is not None and reply.headers[Header.ERROR_CODE.value] == "synthesis_timeout"
    assert reply.headers[Header.REQUEST_ID.value] == "stale-1"
    body = json.loads(reply.data)["error"]
    assert "before the request arrived" in body["message"] and body["detail"]["late_ms"] >= 8_000
    assert piper.engine_calls == calls
    assert _dropped_late() == dropped + 1


async def test_a_fresh_request_with_a_deadline_is_served_and_its_budget_counts_from_when_it_was_sent(
    piper_loaded: TtsApp, nc: Client
) -> None:
    now_ms = time.time_ns() // 1_000_000
    fresh = {Header.DEADLINE.value: str(now_ms + 30_000), Header.SENT_AT.value: str(now_ms)}
    reply = await nc.request("tts.synthesize", SynthesisRequest(text="Still wanted.").to_json(), 30, headers=fresh)
    assert reply.headers is not None and Header.ERROR_CODE.value not in reply.headers
    assert reply.data[:4] == b"RIFF"
    # a body deadline_ms of 20 s, sent 25 s ago (clock skew allowance 2 s): too late, refused
    old = {Header.SENT_AT.value: str(now_ms - 25_000)}
    late = await nc.request(
        "tts.synthesize", SynthesisRequest(text="Too late.", deadline_ms=20_000).to_json(), 5, headers=old
    )
    assert late.headers is not None and late.headers[Header.ERROR_CODE.value] == "synthesis_timeout"


async def test_a_late_stream_request_gets_its_error_then_its_end_message(piper_loaded: TtsApp, nc: Client) -> None:
    now_ms = time.time_ns() // 1_000_000
    stale = {Header.DEADLINE.value: str(now_ms - 10_000), Header.REQUEST_ID.value: "stale-stream"}
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(
        "tts.synthesize", SynthesisRequest(text="Late.", stream=True).to_json(), reply=inbox, headers=stale
    )
    error, end = await sub.next_msg(5), await sub.next_msg(5)
    assert error.headers is not None and error.headers[Header.ERROR_CODE.value] == "synthesis_timeout"
    assert end.headers is not None and end.headers[Header.STREAM_END.value] == "1" and end.data == b""
    assert end.headers[Header.REQUEST_ID.value] == "stale-stream"
    await sub.unsubscribe()
