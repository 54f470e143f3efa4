"""Downloads seen through real NATS: the service answers while one hangs, and waiters wake on events.

A real embedded nats-server, the real TtsApp with Piper and the small test backend
(tests/support/downloads.py; the real hub models are multi-GB), and the fake hub.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from statemachine import Reason, State, StateEvent
from tests.support.downloads import BACKEND, REPO, REPO_FILES, TinyVoiceBackend, make_settings
from tests.support.fakehub import FakeHub, Fault
from tts_actor.app import TtsApp
from tts_actor.backends.piper import PiperBackend
from tts_actor.client.tts_client import TtsClient
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.messages import SynthesisRequest


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedNatsServer(store_dir=tmp_path / "nats", port=-1)
    yield server.start()
    server.stop()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, REPO_FILES)
        yield fake


class StateWatch:
    """Every event on ``tts.state.<backend>``, awaited without polling."""

    def __init__(self) -> None:
        self.events: list[StateEvent] = []
        self._queue: asyncio.Queue[StateEvent] = asyncio.Queue()

    async def on_msg(self, msg: nats.aio.msg.Msg) -> None:
        event = StateEvent.from_dict(json.loads(msg.data))
        self.events.append(event)
        self._queue.put_nowait(event)

    async def until(self, state: State, timeout_s: float) -> StateEvent:
        async def first() -> StateEvent:
            while True:
                event = await self._queue.get()
                if event.to_state is state and event.reason is not Reason.DOWNLOAD_PROGRESS:
                    return event

        return await asyncio.wait_for(first(), timeout_s)


@pytest.fixture
async def observer(nats_url: str) -> AsyncIterator[tuple[Client, StateWatch]]:
    nc = await nats.connect(nats_url)
    watch = StateWatch()
    await nc.subscribe(f"tts.state.{BACKEND}", cb=watch.on_msg)
    yield nc, watch
    await nc.close()


async def start_app(tmp_path: Path, nats_url: str, hub: FakeHub, **changes: object) -> TtsApp:
    settings = make_settings(tmp_path / "cache", hub.url, nats_url=nats_url, backends=("piper", BACKEND), **changes)
    adapters = {"piper": PiperBackend(settings), BACKEND: TinyVoiceBackend(settings)}
    app = TtsApp(settings, adapters=adapters)
    await app.start()
    return app


async def test_service_answers_while_a_download_hangs_and_waiters_wake_on_loaded(
    tmp_path: Path, nats_url: str, hub: FakeHub, observer: tuple[Client, StateWatch]
) -> None:
    nc, watch = observer
    hub.set_fault(REPO, Fault.HOLD, only="model.safetensors")
    app = await start_app(tmp_path, nats_url, hub, download_stall_timeout_s=60.0, download_read_timeout_s=60.0)
    client = TtsClient(nc, retry_policy=None)  # the service's own answers: not-ready at once
    try:
        await watch.until(State.DOWNLOADING, 10)

        began = time.perf_counter()
        status = await client.status()
        assert time.perf_counter() - began < 1.0
        states = {b["name"]: b["state"] for b in status["backends"]}
        assert states[BACKEND] == "downloading"
        spoken = await client.synthesize(SynthesisRequest(text="Piper still speaks.", backend="piper", wait_ms=20_000))
        assert spoken.backend == "piper" and len(spoken.audio) > 44

        request = SynthesisRequest(text="hello", language="en", backend=BACKEND)
        began = time.perf_counter()
        with pytest.raises(TtsError) as excinfo:
            await client.synthesize(request)
        assert excinfo.value.code is ErrorCode.BACKEND_NOT_READY
        assert time.perf_counter() - began < 1.0

        waiting = asyncio.create_task(
            client.synthesize(SynthesisRequest(text="hello", language="en", backend=BACKEND, wait_ms=20_000))
        )
        await client.status()  # a round trip behind the request, so the service has it waiting
        assert not waiting.done()
        released = time.perf_counter()
        hub.release()
        reply = await asyncio.wait_for(waiting, 10)
        woke_after = time.perf_counter() - released
        assert reply.backend == BACKEND and reply.audio
        assert woke_after < 3.0  # woken by the loaded event, far before wait_ms

        loaded = await watch.until(State.LOADED, 5)
        assert loaded.reason is Reason.LOADED_AFTER_DOWNLOAD
        progress = [e for e in watch.events if e.reason is Reason.DOWNLOAD_PROGRESS]
        assert progress and progress[-1].progress is not None and progress[-1].progress.total
        kv = await nc.jetstream().key_value(app.settings.kv_bucket)
        assert json.loads((await kv.get(BACKEND)).value)["to"] == "loaded"
    finally:
        await app.stop()


async def test_control_retry_brings_a_failed_download_up(
    tmp_path: Path, nats_url: str, hub: FakeHub, observer: tuple[Client, StateWatch]
) -> None:
    nc, watch = observer
    hub.set_fault(REPO, Fault.NOT_FOUND)
    app = await start_app(tmp_path, nats_url, hub)
    try:
        failed = await watch.until(State.FAILED, 10)
        assert failed.reason is Reason.MODEL_UNAVAILABLE
        hub.set_fault(REPO, Fault.NONE)
        answer = await TtsClient(nc).control(BACKEND, "retry")
        assert answer["ok"] is True
        retried = await watch.until(State.DOWNLOADING, 5)
        assert retried.reason is Reason.RETRY
        await watch.until(State.LOADED, 10)
    finally:
        await app.stop()
