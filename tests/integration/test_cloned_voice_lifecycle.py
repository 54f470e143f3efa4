"""Issue 16's first "done when", end to end, as a user of the official ``openai`` SDK (3.57) sees it.

Two service instances share one real nats-server (its object stores and streams); the real uvicorn edge
sits in front. Chatterbox is the stand-in package of tests/support/stand_in_chatterbox.py (its weights
cannot run here): it speaks a sine at its voice's pitch, the built-in one at BUILTIN_HZ and a cloned one
at the pitch of the reference clip, so the test hears whose voice came back. Everything else is real:
NATS, JetStream, both services, their adapters and conditioning LRUs, the edge, the SDK.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import openai
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.cloning import holds
from tests.support.helpers import eventually
from tests.support.stand_in_chatterbox import (  # noqa: F401
    BUILTIN_HZ,
    checkpoint,
    dominant_hz,
    findable_chatterbox,
    stand_in_chatterbox,
)
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import read_wav
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.client.audit import read_audit
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.http_edge.middleware import key_id
from tts_actor.synthesis.audio_cache import REFERENCE_HEADER

KEYS = ("key-of-alice", "key-of-bob")
ALICE_HZ, BOB_HZ = 440.0, 330.0


def pitch(wav: bytes) -> float:
    audio = read_wav(wav)
    return dominant_hz(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate)


async def cached_objects(nc: Client, bucket: str) -> dict[str, str | None]:
    """The audio cache bucket's objects, each with the clip digest it was made from (None: a built-in voice)."""
    store = await nc.jetstream().object_store(bucket)
    try:
        infos = await store.list(ignore_deletes=True)
    except NotFoundError:
        return {}
    return {info.name: ((info.headers or {}).get(REFERENCE_HEADER) or [None])[0] for info in infos}


@contextlib.asynccontextmanager
async def two_instances_and_the_edge(
    settings: Settings, nc: Client, tmp_path: Path
) -> AsyncIterator[tuple[HttpEdge, dict[str, TtsApp], dict[str, ChatterboxBackend]]]:
    checkpoint(tmp_path / "ckpt" / "english")
    per = {
        name: settings.with_(
            instance=name, backends=("chatterbox",), local_model_dirs={"chatterbox": tmp_path / "ckpt"}
        )
        for name in ("a", "b")
    }
    adapters = {name: ChatterboxBackend(per[name]) for name in per}
    apps = {name: TtsApp(per[name], adapters={"chatterbox": adapters[name]}) for name in per}
    edge = HttpEdge(settings, EdgeSettings(api_keys=KEYS), "127.0.0.1", 0)
    try:
        for app in apps.values():
            await app.start()
            await next_state(app, "chatterbox", State.LOADED)
        await edge.start(nc)
        yield edge, apps, adapters
    finally:
        await edge.stop()
        for app in apps.values():
            await app.stop()


def sdk(edge: HttpEdge, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{edge.url}/v1", max_retries=0, timeout=60)


async def speak(client: openai.AsyncOpenAI, text: str, voice: object) -> bytes:
    reply = await client.audio.speech.create(model="tts-1", input=text, voice=voice, response_format="wav")  # type: ignore[arg-type]
    return reply.content


async def clone(client: openai.AsyncOpenAI, who: str, hz: float) -> str:
    """The SDK's two steps: the speaker's consent, then the voice made under it; the voice's id."""
    recording = ("consent.wav", io.BytesIO(tone_wav(2.0, hz=300.0)), "audio/wav")
    consent = await client.audio.voice_consents.create(name=who, language="en-US", recording=recording)
    voice = await client.audio.voices.create(
        name=f"{who}'s voice", consent=consent.id, audio_sample=("s.wav", tone_wav(3.0, hz=hz), "audio/wav")
    )
    assert voice.object == "audio.voice" and voice.id.startswith("voice_")
    return voice.id


@pytest.mark.usefixtures("findable_chatterbox")
async def test_a_cloned_voice_from_consent_to_erasure_through_the_sdk_on_two_instances(
    settings: Settings, nc: Client, tmp_path: Path
) -> None:
    async with two_instances_and_the_edge(settings, nc, tmp_path) as (edge, apps, adapters):
        alice, bob = sdk(edge, KEYS[0]), sdk(edge, KEYS[1])
        voice = await clone(alice, "Alice", ALICE_HZ)
        kept = await clone(bob, "Bob", BOB_HZ)  # another key's voice: its audio must outlive Alice's delete
        digest = (await apps["a"].service.profiles.get(voice)).digest  # type: ignore[union-attr]
        kept_digest = (await apps["a"].service.profiles.get(kept)).digest  # type: ignore[union-attr]

        # the queue group spreads requests: speak (new texts, so no cache hits) until both instances cloned it
        for n in range(40):
            cloned = await speak(alice, f"Spoken in the cloned voice, take {n}.", {"id": voice})
            assert pitch(cloned) == pytest.approx(ALICE_HZ, abs=5), f"take {n} was not Alice's voice"
            plain = await speak(bob, f"The next caller, in the built-in voice, take {n}.", "alloy")
            assert pitch(plain) == pytest.approx(BUILTIN_HZ, abs=5), "the cloned voice reached the next caller"
            if n >= 3 and all(holds(adapter, digest) for adapter in adapters.values()):
                break
        assert holds(adapters["b"], digest), "the second instance never held the cloned voice's conditioning"
        assert pitch(await speak(bob, "Bob in his own voice.", {"id": kept})) == pytest.approx(BOB_HZ, abs=5)
        for app in apps.values():
            await app.service.cached.drain()  # type: ignore[union-attr]
        bucket = settings.audio_cache_bucket
        before = await cached_objects(nc, bucket)
        alices = {name for name, ref in before.items() if ref == digest}
        assert len(alices) >= 4 and kept_digest in before.values() and None in before.values(), before

        with pytest.raises(openai.NotFoundError):  # Bob cannot delete Alice's voice: it reads as not there
            await bob.audio.voices.delete(voice)
        deleted = await alice.audio.voices.delete(voice)
        assert (deleted.object, deleted.id, deleted.deleted) == ("audio.voice.deleted", voice, True)

        with pytest.raises(openai.NotFoundError) as gone:
            await speak(alice, "Spoken in the cloned voice, take 0.", {"id": voice})  # a text that was cached
        assert gone.value.code == "unknown_voice"
        after = await cached_objects(nc, bucket)
        print(f"\naudio cache objects: {len(before)} before the delete, {len(after)} after ({len(alices)} Alice's)")
        assert set(after) == set(before) - alices, "exactly Alice's cached audio went; Bob's and the built-in stayed"
        await eventually(lambda: not any(holds(adapter, digest) for adapter in adapters.values()), 5.0)
        assert holds(adapters["a"], kept_digest) or holds(adapters["b"], kept_digest), "Bob's voice was dropped too"
        assert pitch(await speak(bob, "Bob, after Alice left.", {"id": kept})) == pytest.approx(BOB_HZ, abs=5)
        with pytest.raises(openai.NotFoundError):  # deleting twice: OpenAI's 404
            await alice.audio.voices.delete(voice)

        # the audit trail names the key behind each action (read back after a restart: test_audit.py)
        for app in apps.values():
            await app.service.audit.drain()  # type: ignore[union-attr]
        trail = [e["action"] for e in await read_audit(nc) if e["id"] == voice]
        assert trail[0] == "voice_create" and trail[-1] == "voice_delete" and "synthesize" in trail, trail
        assert trail.count("voice_delete") == 1, "the refused speech after the delete is not a use of the voice"
        alice_key = f"anonymous/http:{key_id(KEYS[0])}"  # the edge's NATS user, then Alice's key's id
        for action in ("voice_create", "synthesize", "voice_delete"):  # who spoke with the cloned voice, too
            actors = {e["actor"] for e in await read_audit(nc, action=action) if e["id"] == voice}
            assert actors == {alice_key}, (action, actors)
