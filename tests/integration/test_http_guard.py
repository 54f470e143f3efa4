"""Slow and surplus HTTP callers against the real edge on loopback, with raw sockets (tts_actor/http_edge/guard.py).

uvicorn alone held connections dribbling headers or a body 1 byte/s for as long as they liked; the edge
closes them at TTS_HTTP_HEADER_TIMEOUT_S / TTS_HTTP_BODY_TIMEOUT_S (short here) and refuses the
connection over TTS_HTTP_MAX_CONNECTIONS with a 503 at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from nats.aio.client import Client

from tests.support.helpers import eventually
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings

TIMEOUT_S = 2.0
SLACK_S = 6.0  # closed within the timeout plus this (a loaded 2-core machine), far below "never"
REQUEST_HEAD = b"POST /v1/audio/speech HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"


@asynccontextmanager
async def edge(settings: Settings, nc: Client, config: EdgeSettings) -> AsyncIterator[HttpEdge]:
    running = HttpEdge(settings, config, "127.0.0.1", 0)
    await running.start(nc)
    try:
        yield running
    finally:
        await running.stop()


async def dribble(port: int, data: bytes, first: bytes = b"") -> tuple[float, bytes]:
    """Send ``first`` at once, then ``data`` a byte a second; (seconds until the server closed, what it said)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        writer.write(first)
        for byte in data:  # bounded: at most len(data) seconds
            await asyncio.sleep(1.0)
            writer.write(bytes([byte]))
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        answer = await asyncio.wait_for(reader.read(), len(data) + 5)  # returns when the server closes
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return time.monotonic() - started, answer


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_twenty_callers_dribbling_headers_are_closed_at_the_timeout(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(header_timeout_s=TIMEOUT_S)
    async with edge(settings, nc, config) as running:
        headers = REQUEST_HEAD + b"X-Slow: " + b"a" * 40 + b"\r\n\r\n"
        results = await asyncio.gather(*(dribble(running.port, headers) for _ in range(20)))
        # and the edge still answers others at once
        async with httpx2.AsyncClient(base_url=running.url) as http:
            assert (await http.get("/healthz")).status_code == 200
    closed_after = [seconds for seconds, _ in results]
    print(f"20 header dribblers closed after {min(closed_after):.2f}-{max(closed_after):.2f} s (timeout {TIMEOUT_S} s)")
    assert all(TIMEOUT_S - 0.1 <= s < TIMEOUT_S + SLACK_S for s in closed_after), closed_after
    for _, answer in results:
        status, body = status_and_body(answer)
        assert status == 408 and body["error"]["code"] == "invalid_request"
        assert "TTS_HTTP_HEADER_TIMEOUT_S" in body["error"]["fix"]


async def test_a_body_sent_a_byte_a_second_is_closed_at_the_body_timeout(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(header_timeout_s=30.0, body_timeout_s=TIMEOUT_S)
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": "Slowly, slowly, very slowly."}).encode()
    head = REQUEST_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode()
    async with edge(settings, nc, config) as running:
        seconds, answer = await dribble(running.port, body, first=head)
    print(f"body dribbler closed after {seconds:.2f} s (timeout {TIMEOUT_S} s)")
    assert TIMEOUT_S - 0.1 <= seconds < TIMEOUT_S + SLACK_S
    status, error = status_and_body(answer)
    assert status == 408 and "TTS_HTTP_BODY_TIMEOUT_S" in error["error"]["fix"]


async def test_without_a_key_the_caller_is_refused_before_its_body_and_closed(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(api_keys=("k1",), header_timeout_s=30.0, body_timeout_s=30.0)
    head = REQUEST_HEAD + b"Content-Length: 500\r\n\r\n"
    async with edge(settings, nc, config) as running:
        seconds, answer = await dribble(running.port, b"x" * 20, first=head)
    assert seconds < 3.0, f"a caller without a key held its connection {seconds:.2f} s"
    status, error = status_and_body(answer)
    assert status == 401 and error["error"]["code"] == "missing_api_key"
    assert b"connection: close" in answer.lower() and b"x-should-retry: false" in answer.lower()


async def test_the_connection_over_the_cap_gets_503_at_once(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(max_connections=5, header_timeout_s=30.0)
    async with edge(settings, nc, config) as running:
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(5)]
        assert running._server is not None
        await eventually(lambda: len(running._server.server_state.connections) == 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), 5)
        refused_in = time.monotonic() - started
        writer.close()
        status, error = status_and_body(answer)
        assert (
            status == 503 and error["error"]["code"] == "busy" and "TTS_HTTP_MAX_CONNECTIONS" in error["error"]["fix"]
        )
        assert b"retry-after: 1" in answer.lower()
        assert refused_in < 1.0
        for _, held_writer in held:  # room again: a new caller is served
            held_writer.close()
        await eventually(lambda: not running._server.server_state.connections)
        async with httpx2.AsyncClient(base_url=running.url) as http:
            assert (await http.get("/healthz")).status_code == 200
    print(f"connection over the cap refused with 503 in {refused_in * 1000:.1f} ms")


async def test_unknown_paths_and_methods_get_openai_shaped_json(settings: Settings, nc: Client) -> None:
    async with edge(settings, nc, EdgeSettings()) as running, httpx2.AsyncClient(base_url=running.url) as http:
        missing = await http.get("/v1/nope")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert "/v1/nope" in missing.json()["error"]["message"] and "/v1/audio/speech" in missing.json()["error"]["fix"]
        assert missing.headers["x-should-retry"] == "false"
        wrong = await http.get("/v1/audio/speech")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "invalid_request"
        assert "POST" in wrong.json()["error"]["message"] and wrong.headers["allow"] == "POST"
