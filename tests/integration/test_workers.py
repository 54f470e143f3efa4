"""TTS_<BACKEND>_WORKERS: several Piper sessions serve one inbox at once; serial engines stay serial."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from tests.support.audio_checks import decode
from tests.support.backends import isolated_settings, running_service
from tts_actor.audio.pcm import Audio
from tts_actor.backends import Voice
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.piper import PiperBackend
from tts_actor.config import ConfigError, load_settings
from tts_actor.wire.messages import SynthesisRequest


class MeetingPiper(PiperBackend):
    """Real Piper that records which session and thread each call used, and makes two calls meet.

    The first two calls wait for each other at a barrier before synthesizing: with two workers
    they meet (both are inside the engine at once); with one they could not, and the barrier breaks.
    """

    def __init__(self, settings: object) -> None:
        super().__init__(settings)
        self.meeting = threading.Barrier(2, timeout=30)
        self.calls: list[int] = []  # the thread of each call
        self._calls_lock = threading.Lock()

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        with self._calls_lock:
            first_two = len(self.calls) < 2
            self.calls.append(threading.get_ident())
        if first_two:
            self.meeting.wait()  # raises BrokenBarrierError if the other call never comes in
        return super().synthesize(request, voice)


async def test_two_workers_run_two_long_requests_at_once(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",), backend_workers={"piper": 2})
    adapter = MeetingPiper(settings)
    async with running_service(tmp_path, settings, {"piper": adapter}) as (app, client):
        actor = app.registry.actors["piper"]  # type: ignore[union-attr]
        assert (await actor.wait_settled(30)).value == "loaded"
        assert actor.workers == 2 and actor.status()["workers"] == 2
        voice_id = next(iter(adapter._loaded))
        assert adapter._loaded[voice_id].qsize() == 2  # two ONNX Runtime sessions for the voice
        text = "A long request, said slowly and completely, so that the other one has time to start as well."
        # cache off: two identical requests would otherwise share one synthesis (coalescing)
        replies = await asyncio.gather(*(client.synthesize(SynthesisRequest(text=text, cache=False)) for _ in range(2)))
        assert not adapter.meeting.broken  # both calls were inside the engine together
        assert len(set(adapter.calls[:2])) == 2  # on two worker threads
        for reply in replies:
            assert decode(reply.audio).duration_ms > 3000


async def test_sessions_split_the_cores_and_each_speaks(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",), backend_workers={"piper": 2})
    adapter = PiperBackend(settings)
    await asyncio.to_thread(adapter.load, {})
    voice = adapter.voices()[0]
    sessions = [adapter._loaded[voice.id].get() for _ in range(2)]
    assert sessions[0] is not sessions[1] and sessions[0].session is not sessions[1].session
    threads = sessions[0].session.get_session_options().intra_op_num_threads
    assert 1 <= threads and threads * 2 <= max(2, os.cpu_count() or 1)
    for piper_voice in sessions:
        adapter._loaded[voice.id].put(piper_voice)
    audio = await asyncio.to_thread(adapter.synthesize, SynthesisRequest(text="Two sessions."), voice)
    assert decode(audio.to_wav()).duration_ms > 500


def test_workers_setting_and_engines_that_stay_serial(tmp_path: Path) -> None:
    s = load_settings({"TTS_PIPER_WORKERS": "3", "TTS_CHATTERBOX_WORKERS": "2"})
    assert (s.workers_for("piper"), s.workers_for("chatterbox"), s.workers_for("mms")) == (3, 2, 1)
    for bad in ("0", "x", "65"):
        with pytest.raises(ConfigError, match="TTS_PIPER_WORKERS"):
            load_settings({"TTS_PIPER_WORKERS": bad})
    assert PiperBackend.spec.parallel_sessions and not ChatterboxBackend.spec.parallel_sessions
    from tts_actor.lifecycle.actor import BackendActor

    settings = isolated_settings(tmp_path, backend_workers={"chatterbox": 2, "piper": 2})
    serial = BackendActor(ChatterboxBackend(settings), settings, None, lambda _event: None)
    parallel = BackendActor(PiperBackend(settings), settings, None, lambda _event: None)
    assert (serial.workers, parallel.workers) == (1, 2)
    for actor in (serial, parallel):
        actor.engine.worker.shutdown(wait=True)
