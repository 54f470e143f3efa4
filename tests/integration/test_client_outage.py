"""The client across a NATS outage: nothing written into a dead link's buffer, the request sent on reconnect.

A real nats-server is stopped and started again on the same port while a request waits; the
service (real Piper, in process) and the client both reconnect. The client waits on its
:class:`LinkState` (an event, no polling), so the service gets the request once, fresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import structlog
from nats.aio.msg import Msg

from tests.support.helpers import wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.deadlines import now_epoch_ms
from tts_actor.wire.headers import Header
from tts_actor.wire.link import LinkState
from tts_actor.wire.messages import SynthesisRequest

pytestmark = pytest.mark.timeout(120)
OUTAGE_S = 1.5


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    nats_server = EmbeddedNatsServer(tmp_path / "nats", port=-1)
    await asyncio.to_thread(nats_server.start)
    yield nats_server
    await asyncio.to_thread(nats_server.stop)


async def restart(server: EmbeddedNatsServer) -> EmbeddedNatsServer:
    """The same store and port, a new process."""
    again = EmbeddedNatsServer(server.store_dir, port=server.port or -1)
    await asyncio.to_thread(again.start)
    return again


async def test_a_request_made_during_an_outage_is_sent_once_on_reconnect(
    tmp_path: Path, server: EmbeddedNatsServer
) -> None:
    settings = load_settings({}).with_(
        nats_url=server.url, cache_dir=tmp_path / "cache", instance="outage", backends=("piper",), allow_download=False
    )
    app = TtsApp(settings)
    await app.start()
    assert app.registry is not None and (await app.registry.actors["piper"].wait_settled(30)).value == "loaded"
    down, state = asyncio.Event(), LinkState()

    async def on_down() -> None:
        down.set()

    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **state.callbacks(on_down))
    seen: list[dict[str, str]] = []

    async def record(msg: Msg) -> None:
        seen.append(dict(msg.headers or {}))

    spy = await nc.subscribe("tts.synthesize", cb=record)
    again: EmbeddedNatsServer | None = None
    try:
        client = TtsClient(nc, timeout_s=30, connection=state)
        await asyncio.to_thread(server.stop)
        await asyncio.wait_for(down.wait(), 10)
        with structlog.testing.capture_logs() as logs:
            call = asyncio.create_task(client.synthesize(SynthesisRequest(text="Back again.", cache=False)))
            await asyncio.sleep(OUTAGE_S)  # the outage's length, not a poll
            assert not call.done()
            restarted_ms = now_epoch_ms()
            again = await restart(server)
            reply = await asyncio.wait_for(call, 30)
    finally:
        await spy.unsubscribe()
        await nc.close()
        await app.stop()
        if again is not None:
            await asyncio.to_thread(again.stop)
    assert wav_info(reply.audio).duration_s > 0.3
    served = [e for e in logs if e["event"] == "synthesized"]
    assert len(served) == 1, served
    # the client's own copy of what went out: each attempt (a first one may reach no service yet: the service
    # reconnects too, and the silent attempt is sent again) was written after the restart, none during the outage
    assert len(seen) == client.retries + 1 and client.retries <= 2
    assert all(int(headers[Header.SENT_AT.value]) >= restarted_ms - 50 for headers in seen)
    deadlines = {int(headers[Header.DEADLINE.value]) for headers in seen}
    assert len(deadlines) == 1  # the caller's one deadline, on every attempt
    assert restarted_ms - OUTAGE_S * 1000 + 25_000 < deadlines.pop() <= restarted_ms + 30_000


async def test_without_a_connection_state_a_down_link_fails_at_once(server: EmbeddedNatsServer) -> None:
    down = asyncio.Event()

    async def on_down() -> None:
        down.set()

    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, disconnected_cb=on_down)
    try:
        await asyncio.to_thread(server.stop)
        await asyncio.wait_for(down.wait(), 10)
        started = time.monotonic()
        with pytest.raises(TtsError) as info:
            await TtsClient(nc, timeout_s=30).synthesize(SynthesisRequest(text="Nobody hears this."))
        failed_after = time.monotonic() - started
    finally:
        await nc.close()
    assert info.value.code is ErrorCode.BACKEND_NOT_READY
    assert "connection is down" in info.value.message and "not sent" in info.value.message
    assert info.value.retry_after_ms is None  # the client's own retries do not loop on it
    assert failed_after < 1.0
