"""OpenAI's custom-voice API, driven by the official ``openai`` SDK (3.57) against the real edge and service.

Chatterbox is the stand-in package of tests/support/stand_in_chatterbox.py (its weights cannot run here):
it speaks a sine at its voice's pitch, the built-in one at BUILTIN_HZ and a cloned one at the pitch of the
reference clip, so a test hears whose voice came back. Everything else is real: NATS, JetStream, the
service, the adapter, the uvicorn edge.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import numpy as np
import openai
import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import install_stand_in, next_state, tone_wav
from tests.support.stand_in_chatterbox import BUILTIN_HZ, checkpoint, dominant_hz, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import read_wav
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings

KEYS = ("key-of-alice", "key-of-bob")
CLIP_HZ = 440.0
CONSENT_PHRASE = tone_wav(2.0, hz=300.0)  # the speaker saying they agree, as far as the service can tell


def pitch(wav: bytes) -> float:
    audio = read_wav(wav)
    return dominant_hz(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate)


@pytest.fixture
def findable_chatterbox(stand_in_chatterbox: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The service's package probe (importlib.util.find_spec) finds the stand-ins; torchaudio is one too."""
    if "torchaudio" not in sys.modules:
        install_stand_in(monkeypatch, "torchaudio")
    for name in ("chatterbox", "torchaudio"):
        monkeypatch.setattr(sys.modules[name], "__spec__", importlib.machinery.ModuleSpec(name, None), raising=False)


@contextlib.asynccontextmanager
async def edge_and_chatterbox(settings: Settings, nc: Client, tmp_path: Path) -> AsyncIterator[HttpEdge]:
    checkpoint(tmp_path / "ckpt" / "english")
    app = TtsApp(settings.with_(backends=("chatterbox",), local_model_dirs={"chatterbox": tmp_path / "ckpt"}))
    edge = HttpEdge(settings, EdgeSettings(api_keys=KEYS), "127.0.0.1", 0)
    await app.start()
    try:
        await next_state(app, "chatterbox", State.LOADED)
        await edge.start(nc)
        yield edge
    finally:
        await edge.stop()
        await app.stop()


def sdk(edge: HttpEdge, key: str = KEYS[0]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{edge.url}/v1", max_retries=0, timeout=60)


async def speak(client: openai.AsyncOpenAI, text: str, voice: object) -> bytes:
    reply = await client.audio.speech.create(model="tts-1", input=text, voice=voice, response_format="wav")  # type: ignore[arg-type]
    return reply.content


@pytest.mark.usefixtures("findable_chatterbox")
async def test_consent_voice_speech_and_delete_through_the_official_sdk(
    settings: Settings, nc: Client, tmp_path: Path
) -> None:
    async with edge_and_chatterbox(settings, nc, tmp_path) as edge:
        alice, bob = sdk(edge), sdk(edge, KEYS[1])
        consent = await alice.audio.voice_consents.create(
            name="Alice", language="en-US", recording=("consent.wav", io.BytesIO(CONSENT_PHRASE), "audio/wav")
        )
        assert consent.object == "audio.voice_consent" and consent.id.startswith("cons_")
        assert (await alice.audio.voice_consents.retrieve(consent.id)).name == "Alice"
        assert (await alice.audio.voice_consents.update(consent.id, name="Alice S.")).name == "Alice S."
        listed = [c.id async for c in alice.audio.voice_consents.list(limit=1)]
        assert listed == [consent.id]
        # another key sees nothing of it, and cannot clone under it
        assert [c.id async for c in bob.audio.voice_consents.list()] == []
        with pytest.raises(openai.NotFoundError):
            await bob.audio.voice_consents.retrieve(consent.id)
        with pytest.raises(openai.BadRequestError) as refused:
            await bob.audio.voices.create(
                name="stolen", consent=consent.id, audio_sample=("s.wav", tone_wav(3.0, hz=CLIP_HZ), "audio/wav")
            )
        assert refused.value.code == "consent_required"

        voice = await alice.audio.voices.create(
            name="Alice's voice", consent=consent.id, audio_sample=("s.wav", tone_wav(3.0, hz=CLIP_HZ), "audio/wav")
        )
        assert voice.object == "audio.voice" and voice.id.startswith("voice_") and voice.type == "audio_sample"
        assert voice.name == "Alice's voice" and voice.created_at > 1_700_000_000
        cloned = await speak(alice, "Spoken in the cloned voice.", {"id": voice.id})
        assert pitch(cloned) == pytest.approx(CLIP_HZ, abs=5)
        plain = await speak(bob, "The next caller, in the built-in voice.", "alloy")
        assert pitch(plain) == pytest.approx(BUILTIN_HZ, abs=5), "the cloned voice reached the next caller"

        with pytest.raises(openai.NotFoundError):  # another key's voice: as if there were none
            await bob.audio.voices.delete(voice.id)
        deleted = await alice.audio.voices.delete(voice.id)
        assert (deleted.object, deleted.id, deleted.deleted) == ("audio.voice.deleted", voice.id, True)
        with pytest.raises(openai.NotFoundError) as gone:
            await speak(alice, "Nobody's voice any more.", {"id": voice.id})
        assert gone.value.code == "unknown_voice"
        with pytest.raises(openai.NotFoundError):  # OpenAI's: a deleted voice is a 404
            await alice.audio.voices.delete(voice.id)

        # deleting the consent takes the voices made under it
        second = await alice.audio.voices.create(
            name="again", consent=consent.id, audio_sample=("s.wav", tone_wav(3.0, hz=CLIP_HZ), "audio/wav")
        )
        removed = await alice.audio.voice_consents.delete(consent.id)
        assert (removed.id, removed.deleted) == (consent.id, True)
        with pytest.raises(openai.NotFoundError):
            await speak(alice, "Gone with its consent.", {"id": second.id})
        with pytest.raises(openai.NotFoundError):
            await alice.audio.voice_consents.retrieve(consent.id)


@pytest.mark.usefixtures("findable_chatterbox")
async def test_bad_uploads_and_queries_get_openais_errors(settings: Settings, nc: Client, tmp_path: Path) -> None:
    async with edge_and_chatterbox(settings, nc, tmp_path) as edge:
        alice = sdk(edge)
        with pytest.raises(openai.BadRequestError) as missing:
            await alice.audio.voices.create(
                name="x", consent="cons_" + "A" * 32, audio_sample=("s.wav", tone_wav(3.0), "audio/wav")
            )
        assert missing.value.code == "consent_required" and missing.value.param == "consent"
        bad = [
            ({"name": "x" * 257, "language": "en"}, CONSENT_PHRASE, 400, "limit is 256"),
            ({"name": "x", "language": "not a tag"}, CONSENT_PHRASE, 400, "BCP-47"),
            ({"name": "x", "language": "en"}, b"plain text, no audio at all", 400, "not audio"),
            ({"name": "x", "language": "en"}, b"RIFF" + bytes(10 * 1024 * 1024), 413, "the limit is 10485760"),
            # within OpenAI's 10 MiB, but past what this NATS server carries in one message (8 MiB, base64)
            ({"name": "x", "language": "en"}, b"RIFF" + bytes(7 * 1024 * 1024), 413, "carries at most"),
            ({"language": "en"}, CONSENT_PHRASE, 400, "'name'"),
        ]
        headers = {"Authorization": f"Bearer {KEYS[0]}"}
        async with httpx2.AsyncClient(base_url=edge.url, headers=headers, timeout=30) as http:
            for fields, recording, status, words in bad:
                reply = await http.post(
                    "/v1/audio/voice_consents", data=fields, files={"recording": ("r.wav", recording, "audio/wav")}
                )
                assert reply.status_code == status, (fields, reply.text)
                assert words in reply.json()["error"]["message"] and reply.json()["error"]["fix"]
            for query in ("limit=101", "limit=0", "limit=x", "after=" + "a" * 65, "owner=me"):
                reply = await http.get(f"/v1/audio/voice_consents?{query}")
                assert reply.status_code == 400, query
            reply = await http.post("/v1/audio/voice_consents", json={"name": "x"})
            assert reply.status_code == 400 and "multipart" in reply.json()["error"]["message"]
            reply = await http.post("/v1/audio/speech", json={"model": "tts-1", "input": "x", "voice": {"id": 5}})
            assert reply.status_code == 400
            # the edge still serves
            assert (await http.get("/v1/audio/voice_consents")).json()["data"] == []
