"""Synthesis over a real nats-server with the real Piper voice: the audio, bad input, limits, chunking."""

from __future__ import annotations

import json

import pytest
from nats.aio.client import Client

from tests.support.helpers import GatedPiper, raw_request, serving, wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

TWENTY_WORDS = (
    "The translator sent this sentence so that the speech service could read it aloud "
    "to every listener in the room today."
)


async def test_synthesize_returns_mono_wav_of_plausible_duration(piper_loaded: TtsApp, client: TtsClient) -> None:
    reply = await client.synthesize(SynthesisRequest(text=TWENTY_WORDS))
    info = wav_info(reply.audio)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 22050)
    # 20 words at 100-250 words a minute
    assert 4.0 < info.duration_s < 13.0, info.duration_s
    assert reply.headers["Content-Type"] == "audio/wav"
    assert reply.backend == "piper"
    assert reply.headers["Tts-Voice"] == "en_US-joe-medium"
    assert abs(reply.duration_ms - info.duration_s * 1000) < 2
    short = await client.synthesize(SynthesisRequest(text="Hello there."))
    assert wav_info(short.audio).duration_s < info.duration_s / 3


async def test_pcm_format_is_raw_samples(piper_loaded: TtsApp, client: TtsClient) -> None:
    wav = await client.synthesize(SynthesisRequest(text="One two three."))
    pcm = await client.synthesize(SynthesisRequest(text="One two three.", format=AudioFormat.PCM))
    assert pcm.headers["Content-Type"].startswith("audio/L16;rate=22050")
    assert len(pcm.audio) % 2 == 0
    assert abs(len(pcm.audio) - (len(wav.audio) - 44)) < 22050  # same text, about the same length


BAD_INPUTS = [
    (b"{not json", "invalid_request", "400"),
    (b"[1, 2]", "invalid_request", "400"),
    (b"\xff\xfe", "invalid_request", "400"),
    (json.dumps({"language": "en"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": ""}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "   "}).encode(), "invalid_request", "400"),
    (json.dumps({"text": 42}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": 7}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": "english"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "wait_ms": -1}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "wait_ms": "soon"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "colour": "blue"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "options": {"speed": 100}}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "reference_audio": "***"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi\u0000there"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "\ud800 lone surrogate"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "x" * 5001}).encode(), "text_too_long", "413"),
    (json.dumps({"text": "hi", "backend": "espeak"}).encode(), "unknown_backend", "404"),
    (json.dumps({"text": "hi", "voice": "nobody"}).encode(), "unknown_voice", "404"),
    (json.dumps({"text": "hi", "backend": "piper", "voice": "nobody"}).encode(), "unknown_voice", "404"),
    (json.dumps({"text": "hi", "format": "aiff"}).encode(), "unknown_format", "400"),
    (json.dumps({"text": "hi", "format": "opus", "sample_rate": 22050}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "format": "flac", "bitrate": 64000}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "format": "mp3", "bitrate": 1000}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "sample_rate": 11025}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "stream": "yes"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "deadline_ms": -5}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": "xx"}).encode(), "unsupported_language", "422"),
    (json.dumps({"text": "hi", "backend": "piper", "language": "de"}).encode(), "unsupported_language", "422"),
]


@pytest.mark.parametrize(
    ("payload", "code", "status"), BAD_INPUTS, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_INPUTS)]
)
async def test_bad_input_gets_its_code_and_the_service_keeps_serving(
    piper_loaded: TtsApp, nc: Client, client: TtsClient, payload: bytes, code: str, status: str
) -> None:
    headers, body = await raw_request(nc, payload)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert headers["Nats-Service-Error-Code"] == status
    assert headers["Tts-Error-Code"] == code
    assert error["message"] and error["fix"]
    reply = await client.synthesize(SynthesisRequest(text="Still serving."))
    assert wav_info(reply.audio).frames > 0


async def test_unsupported_language_lists_the_languages_on_offer(piper_loaded: TtsApp, nc: Client) -> None:
    _, body = await raw_request(nc, json.dumps({"text": "Bonjour", "language": "xx"}).encode())
    error = json.loads(body)["error"]
    assert "en" in error["message"]
    assert error["detail"]["languages"]["en"] == ["piper"]


async def test_payload_limit_is_configurable(settings: Settings, nc: Client) -> None:
    app = TtsApp(settings.with_(max_request_bytes=2048, backends=("chatterbox",)))
    await app.start()
    try:
        _, body = await raw_request(nc, json.dumps({"text": "a" * 3000}).encode())
        assert json.loads(body)["error"]["code"] == "payload_too_large"
    finally:
        await app.stop()


async def test_long_audio_comes_back_in_chunks_under_max_payload(
    settings: Settings, nc: Client, client: TtsClient
) -> None:
    app = TtsApp(settings.with_(backends=("piper",)))
    await app.start()
    try:
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        text = " ".join([TWENTY_WORDS] * 12)  # about 80 s of speech, over 3 MB of WAV
        reply = await client.synthesize(SynthesisRequest(text=text), timeout_s=120)
        assert reply.chunks >= 2
        assert len(reply.audio) > nc.max_payload
        info = wav_info(reply.audio)
        assert info.frames * 2 + reply.audio.index(b"data") + 8 == len(reply.audio)  # the header holds the mark
        assert info.duration_s > 40
    finally:
        await app.stop()


OVERSIZED_ECHOES = [
    {"text": "hi", "format": "é" * 300_000},
    {"text": "hi", "language": "😀" * 150_000},
    {"text": "hi", "😀" * 150_000: 1},
    {"text": "hi", "options": {"é" * 300_000: 1}},
]


@pytest.mark.parametrize("body", OVERSIZED_ECHOES, ids=["format", "language", "field", "option"])
async def test_errors_stay_small_whatever_the_request_echoes(piper_loaded: TtsApp, nc: Client, body: dict) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    assert len(payload) < piper_loaded.settings.max_request_bytes
    _, reply = await raw_request(nc, payload)
    assert json.loads(reply)["error"]["code"] in ("invalid_request", "unknown_format")
    assert len(reply) < 4096


@pytest.mark.parametrize(
    "payload", [b"[" * 100_000 + b"]" * 100_000, b'{"text": 1' + b"0" * 5000 + b"}"], ids=["deep", "huge-int"]
)
async def test_pathological_json_is_invalid_request(piper_loaded: TtsApp, nc: Client, payload: bytes) -> None:
    headers, reply = await raw_request(nc, payload)
    assert headers["Tts-Error-Code"] == "invalid_request"
    assert json.loads(reply)["error"]["fix"]


async def test_text_with_nothing_to_speak_is_invalid(piper_loaded: TtsApp, nc: Client) -> None:
    _, body = await raw_request(nc, json.dumps({"text": "." * 50}).encode())
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request" and "nothing" in error["message"]


class ReturnsNothing(GatedPiper):
    """Real Piper, except that every other call hands back nothing instead of audio (an adapter bug)."""

    calls = 0

    def synthesize(self, request: SynthesisRequest, voice):  # type: ignore[override]
        self.calls += 1
        return None if self.calls % 2 else super().synthesize(request, voice)


async def test_an_adapter_bug_is_answered_and_the_inbox_goes_on(settings: Settings, client: TtsClient) -> None:
    buggy = ReturnsNothing(settings)
    async with serving(settings, buggy):
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="First."), timeout_s=10)
        assert info.value.code is ErrorCode.SYNTHESIS_FAILED
        assert (await client.synthesize(SynthesisRequest(text="Second."), timeout_s=10)).backend == "gated"
