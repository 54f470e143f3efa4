"""The synthesis pipeline without a server: the real Piper voice, a Publish that records what would go out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statemachine import State
from tests.support.audio_checks import decode
from tests.support.backends import isolated_settings
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.jobs import JobControl
from tts_actor.lifecycle.registry import Registry
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

THREE = "The first sentence is short. The second one is a little longer than the first. Third!"


def message_headers(headers: dict[str, str]) -> int:
    """What the header block takes on the wire (``NATS/1.0`` line, ``Name: value`` lines, blank line)."""
    return len("NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items())


class Recorded:
    """A Publish: every message as (body, headers), in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, dict[str, str]]] = []
        self.on_audio = lambda: None  # called after each message with a body

    async def __call__(self, data: bytes, headers: dict[str, str]) -> None:
        self.messages.append((data, dict(headers)))
        if data:
            self.on_audio()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return isolated_settings(tmp_path, backends=("piper",))


@pytest.fixture
async def pipeline(settings: Settings) -> AsyncIterator[SynthesisPipeline]:
    registry = Registry(settings, None, lambda event: None)
    await registry.start()
    try:
        assert await registry.actors["piper"].wait_settled(30) is State.LOADED
        yield SynthesisPipeline(registry, settings)  # no store: no profiles, no audio cache
    finally:
        await registry.stop()


async def test_a_whole_reply_is_one_message_with_every_header(pipeline: SynthesisPipeline) -> None:
    request = SynthesisRequest(text=THREE, format=AudioFormat.WAV)
    published = Recorded()
    run = pipeline.run(request, pipeline.registry.route(request), JobControl("req-1"), published, 8 * 1024 * 1024)
    await run.serve()
    ((body, headers),) = published.messages
    assert headers["Tts-Backend"] == "piper" and headers["Tts-Request-Id"] == "req-1"
    assert headers["Tts-Chunk-Count"] == "1" and headers["Tts-Total-Bytes"] == str(len(body))
    assert headers["Tts-Cache"] == "bypass" and headers["Content-Type"].startswith("audio/wav")
    timings = json.loads(headers["Tts-Timings"])
    assert [t["index"] for t in timings] == [0, 1, 2]
    duration_ms = int(headers["Tts-Duration-Ms"])
    assert abs(decode(body).duration_ms - duration_ms) <= 30 and timings[-1]["end_ms"] == duration_ms
    assert not pipeline.jobs  # nothing left to cancel


async def test_a_stream_is_cut_to_max_payload_and_ends_with_the_totals(pipeline: SynthesisPipeline) -> None:
    request = SynthesisRequest(text=THREE, format=AudioFormat.MP3, stream=True)
    published = Recorded()
    run = pipeline.run(request, pipeline.registry.route(request), JobControl("req-2"), published, 4096)
    await run.serve()
    *audio, (end_body, end) = published.messages
    assert end_body == b"" and end["Tts-Stream-End"] == "1" and end["Tts-Request-Id"] == "req-2"
    assert len(audio) > 3 and all(body and len(body) + message_headers(h) <= 4096 for body, h in audio)
    assert end["Tts-Chunk-Count"] == str(len(audio))
    assert end["Tts-Total-Bytes"] == str(sum(len(body) for body, _ in audio))
    assert "Content-Type" in audio[0][1] and all("Content-Type" not in h for _, h in audio[1:])
    indices = [int(h["Tts-Segment-Index"]) for _, h in audio]
    assert indices == sorted(indices) and set(indices) == {0, 1, 2}
    file = b"".join(body for body, _ in audio)
    assert abs(decode(file).duration_ms - int(end["Tts-Duration-Ms"])) <= 60


async def test_a_cancel_mid_stream_answers_the_error_then_the_end(pipeline: SynthesisPipeline) -> None:
    text = " ".join(f"Sentence {n} says one more thing." for n in range(6))
    request = SynthesisRequest(text=text, format=AudioFormat.OPUS, stream=True)
    published = Recorded()
    run = pipeline.run(request, pipeline.registry.route(request), JobControl("req-3"), published, 1024 * 1024)
    published.on_audio = lambda: pipeline.cancel("req-3")  # the first audio out: cancelled, as on tts.cancel
    with pytest.raises(TtsError) as info:
        await run.serve()
    assert info.value.code is ErrorCode.CANCELLED
    await run.fail(info.value)
    *audio, (error_body, error), (end_body, end) = published.messages
    assert error["Tts-Error-Code"] == "cancelled" and json.loads(error_body)["error"]["code"] == "cancelled"
    assert end_body == b"" and end["Tts-Stream-End"] == "1"
    assert audio and end["Tts-Total-Bytes"] == str(sum(len(body) for body, _ in audio))
    assert not pipeline.cancel("req-3")  # done: no instance would answer for it
