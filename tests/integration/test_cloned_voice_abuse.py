"""Trying to break cloned voices: hostile callers, unlucky timing, leftovers of a delete.

A real nats-server and the real service; Chatterbox is the stand-in package of
tests/support/stand_in_chatterbox.py (its weights cannot run here), which speaks a sine at the cloned
clip's pitch. The gate in :class:`GatedChatterbox` only holds the real adapter's worker between segments.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.cloning import GatedChatterbox, chatterbox_settings, holds
from tests.support.helpers import eventually
from tests.support.stand_in_chatterbox import findable_chatterbox, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.synthesis.consents import ConsentStore
from tts_actor.synthesis.custom_voices import CustomVoices
from tts_actor.synthesis.profiles import NewProfile, ProfileStore, VoiceProfile
from tts_actor.wire.consent_requests import NewConsent
from tts_actor.wire.messages import SynthesisRequest


@pytest.mark.usefixtures("findable_chatterbox")
async def test_a_voice_deleted_while_a_synthesis_with_it_streams_stops_it_and_leaves_no_conditioning(
    settings: Settings, tmp_path: Path, client: TtsClient
) -> None:
    """A stream that resolved the clip before the delete stops at its next segment, and leaves nothing behind."""
    own = chatterbox_settings(settings, tmp_path, require_consent=False)
    adapter = GatedChatterbox(own)
    app = TtsApp(own, adapters={"chatterbox": adapter})
    await app.start()
    try:
        await next_state(app, "chatterbox", State.LOADED)
        voice = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["voice_profile"]
        digest = (await app.service.profiles.get(voice)).digest  # type: ignore[union-attr]
        text = " ".join(f"Das ist der Satz Nummer {n}, gesprochen in einer geklonten Stimme." for n in range(4))
        request = SynthesisRequest(text=text, language="de", voice_profile=voice, stream=True)

        heard: list[bytes] = []

        async def listen() -> None:
            async for chunk in client.stream(request):
                heard.append(chunk.data)

        streaming = asyncio.create_task(listen())
        assert await asyncio.to_thread(adapter.started.wait, 30), "the stream's second segment never started"
        assert holds(adapter, digest)
        assert await client.delete_voice(voice) == {"deleted": True}
        assert not holds(adapter, digest), "the delete did not drop the conditioning"
        adapter.gate.set()  # the engine call under way finishes; no further segment is spoken in the deleted voice
        with pytest.raises(TtsError) as stopped:
            await asyncio.wait_for(streaming, 30)
        assert stopped.value.code.value == "unknown_voice" and "deleted" in stopped.value.message
        assert heard and adapter.segments == 2, "segments were spoken after the voice was deleted"
        assert not holds(adapter, digest), "a stream that outlived the delete put the deleted voice back in the LRU"
    finally:
        adapter.gate.set()
        await app.stop()


async def test_a_deleted_consent_leaves_nothing_of_its_record_in_the_bucket(settings: Settings, nc: Client) -> None:
    """Not its recording, and not its metadata either: the speaker's name and the owner stay in a tombstone."""
    store = ConsentStore(nc, settings)
    consent = await store.create(NewConsent("Alice Liddell", "en-GB", tone_wav(2.0)), "translator-a")
    await store.delete(consent.id, "translator-a")
    bucket = await nc.jetstream().object_store(settings.consents_bucket)
    try:
        left = await bucket.list(ignore_deletes=False)
    except NotFoundError:  # nats-py's word for an empty bucket
        left = []
    blob = json.dumps([(i.name, i.description) for i in left])
    assert "Alice Liddell" not in blob and "translator-a" not in blob, blob
    info = await nc.jetstream().stream_info(f"OBJ_{settings.consents_bucket}")
    assert info.state.messages == 0, "the deleted record left messages in its stream"


class RacingProfiles(ProfileStore):
    """The real store; the moment before a profile is stored, ``meanwhile`` runs (a consent delete elsewhere)."""

    meanwhile: Any = None

    async def create(self, new: NewProfile, owner: str | None = None) -> VoiceProfile:
        if self.meanwhile is not None:
            await self.meanwhile()
        return await super().create(new, owner)


async def test_a_voice_created_while_its_consent_is_deleted_does_not_outlive_the_consent(
    settings: Settings, nc: Client
) -> None:
    """Create checked the consent; before the profile is stored, another request deletes the consent."""
    profiles = RacingProfiles(nc, settings)
    voices = CustomVoices(profiles, ConsentStore(nc, settings), settings)
    consent = await voices.create_consent(NewConsent("Bob", "de", tone_wav(2.0)), "translator-a")

    async def delete_the_consent() -> None:
        profiles.meanwhile = None
        _, deleted = await voices.delete_consent(consent.id, "translator-a")
        assert deleted == []  # the voice was not stored yet

    profiles.meanwhile = delete_the_consent
    with pytest.raises(TtsError) as refused:
        await voices.create_voice(NewProfile(tone_wav(3.0), consent=consent.id), "translator-a")
    assert refused.value.code.value == "consent_required"
    left = [p for p in await profiles.summaries() if p.consent == consent.id]
    assert left == [], "a voice outlived the consent it was made under"


class RacingConsents(ConsentStore):
    """The real store; the moment before a record is deleted, ``meanwhile`` runs (a voice create elsewhere)."""

    meanwhile: Any = None

    async def delete(self, consent_id: str, owner: str | None) -> Any:
        if self.meanwhile is not None:
            await self.meanwhile()
        return await super().delete(consent_id, owner)


async def test_a_voice_created_after_the_cascade_looked_is_deleted_with_its_consent(
    settings: Settings, nc: Client
) -> None:
    """The consent delete listed the voices; a whole voice create runs before the record itself goes."""
    consents = RacingConsents(nc, settings)
    profiles = ProfileStore(nc, settings)
    voices = CustomVoices(profiles, consents, settings)
    consent = await voices.create_consent(NewConsent("Carol", "fr", tone_wav(2.0)), "translator-a")
    made: list[str] = []

    async def create_a_voice() -> None:
        consents.meanwhile = None
        made.append((await voices.create_voice(NewProfile(tone_wav(3.0), consent=consent.id), "translator-a")).id)

    consents.meanwhile = create_a_voice
    _, deleted = await voices.delete_consent(consent.id, "translator-a")
    assert made and deleted == made, (made, deleted)
    assert [p for p in await profiles.summaries() if p.consent == consent.id] == []


async def test_hostile_consent_and_voice_ids_over_nats_are_refused_and_the_service_keeps_serving(
    settings: Settings, app: TtsApp, nc: Client, client: TtsClient
) -> None:
    """Malformed, foreign and absurd ids: a structured error or a 'not there', never a crash or a hang."""
    owner = TtsClient(nc, timeout_s=10, retry_policy=None)
    mine = (await owner.create_consent(tone_wav(2.0), "mine", "en"))["id"]
    hostile: list[Any] = [
        "",
        "cons_",
        "cons_" + "A" * 31,
        "cons_" + "A" * 33,
        "cons_../../" + "A" * 26,
        "cons_" + "Ä" * 32,
        "cons_" + "A" * 10_000,
        mine.upper(),
        mine + "\n",
        "voice_" + mine[5:],
        None,
        5,
        ["cons_x"],
        {"id": mine},
    ]
    for bad in hostile:
        for subject, body in (
            ("tts.consents.get", {"id": bad}),
            ("tts.consents.delete", {"id": bad}),
            ("tts.consents.update", {"id": bad, "name": "x"}),
            ("tts.voices.create", {"reference_audio": base64.b64encode(tone_wav(3.0)).decode(), "consent": bad}),
            ("tts.voices.delete", {"voice_profile": bad}),
        ):
            reply = await nc.request(subject, json.dumps(body).encode(), timeout=10)
            answer = json.loads(reply.data)
            assert "error" in answer or answer.get("deleted") is False, (subject, bad, answer)
            if "error" in answer:
                assert answer["error"]["code"] in {
                    "invalid_request",
                    "unknown_voice",
                    "consent_required",
                    "payload_too_large",
                }, answer
    assert (await owner.consent(mine))["id"] == mine, "a hostile id touched a real record"


class KilledAfterRemoving(ProfileStore):
    """The real store; the deleting instance is killed the moment the clip is removed (its task cancelled)."""

    async def remove(self, profile_id: str) -> str | None:
        await super().remove(profile_id)
        raise asyncio.CancelledError  # the process died here: nothing after this line of the erasure ran


@pytest.mark.usefixtures("findable_chatterbox")
async def test_an_instance_killed_mid_erasure_still_leaves_no_conditioning_on_the_others(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    """Once the clip is gone nobody can erase by id again: the fleet must have heard of it by then."""
    per = {name: chatterbox_settings(settings, tmp_path, instance=name, require_consent=False) for name in "ab"}
    adapter_b = ChatterboxBackend(per["b"])
    a, b = TtsApp(per["a"]), TtsApp(per["b"], adapters={"chatterbox": adapter_b})
    for app in (a, b):
        await app.start()
        await next_state(app, "chatterbox", State.LOADED)
    try:
        voice = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["voice_profile"]
        digest = (await a.service.profiles.get(voice)).digest  # type: ignore[union-attr]
        for n in range(40):  # the queue group spreads requests: until b has computed the conditioning
            await client.synthesize(SynthesisRequest(text=f"Satz Nummer {n}.", language="de", voice_profile=voice))
            if holds(adapter_b, digest):
                break
        assert holds(adapter_b, digest)
        erasure = a.service.erasure  # type: ignore[union-attr]
        erasure.profiles = KilledAfterRemoving(a.nc, per["a"])  # type: ignore[arg-type]
        with pytest.raises(asyncio.CancelledError):
            await erasure.delete(voice)
        await a.stop()  # the rest of the killed instance goes too
        assert await client.delete_voice(voice) == {"deleted": False}, "the operator's retry finds nothing to erase"
        await eventually(lambda: not holds(adapter_b, digest), 5.0, explain=lambda: b.service.erasure.applied)  # type: ignore[union-attr]
    finally:
        for app in (a, b):
            await app.stop()


@pytest.mark.usefixtures("findable_chatterbox")
async def test_turning_the_consent_rule_on_keeps_the_voices_made_without_and_refuses_new_ones(
    settings: Settings, tmp_path: Path, client: TtsClient
) -> None:
    """An operator switches TTS_REQUIRE_CONSENT from 0 to 1 (a restart): what was made stays usable and reported."""
    off = chatterbox_settings(settings, tmp_path, require_consent=False)
    app = TtsApp(off)
    await app.start()
    try:
        await next_state(app, "chatterbox", State.LOADED)
        made = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["id"]
    finally:
        await app.stop()
    app = TtsApp(off.with_(require_consent=True))
    await app.start()
    try:
        await next_state(app, "chatterbox", State.LOADED)
        spoken = await client.synthesize(SynthesisRequest(text="Immer noch da.", language="de", voice_profile=made))
        assert spoken.audio and spoken.headers.get("Tts-Backend") == "chatterbox"
        with pytest.raises(TtsError) as refused:
            await client.create_voice(tone_wav(3.0), language="de")
        assert refused.value.code.value == "consent_required"
        report = (await client.voices(profiles=True))["profiles"]
        assert (report["total"], report["consented"], report["require_consent"]) == (1, 0, True)
        assert report["unconsented"][0]["id"] == made[:10] + "…"
        assert await client.delete_voice(made) == {"deleted": True}  # its maker may still delete it
    finally:
        await app.stop()
