"""Trying to break cloned voices: hostile callers, unlucky timing, leftovers of a delete.

A real nats-server and the real service; Chatterbox is the stand-in package of
tests/support/stand_in_chatterbox.py (its weights cannot run here), which speaks a sine at the cloned
clip's pitch. The gate in :class:`GatedChatterbox` only holds the real adapter's worker between segments.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.helpers import eventually
from tests.support.stand_in_chatterbox import checkpoint, findable_chatterbox, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeSettings
from tts_actor.synthesis.consents import ConsentStore
from tts_actor.synthesis.custom_voices import CustomVoices
from tts_actor.synthesis.profiles import NewProfile, ProfileStore, VoiceProfile
from tts_actor.wire.consent_requests import NewConsent
from tts_actor.wire.messages import SynthesisRequest


def chatterbox_settings(settings: Settings, tmp_path: Path, **changes: Any) -> Settings:
    checkpoint(tmp_path / "ckpt" / "multilingual", multilingual=True)
    return settings.with_(
        **{"instance": "solo", **changes},
        backends=("chatterbox",),
        language_overrides={"chatterbox": ("de",)},
        local_model_dirs={"chatterbox": tmp_path / "ckpt"},
    )


def holds(adapter: ChatterboxBackend, digest: str) -> bool:
    return any(key[-1] == digest for key in list(adapter._profiles._entries))


class GatedChatterbox(ChatterboxBackend):
    """The real adapter; from its second segment on, each waits for ``gate`` (the first tells ``started``)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        self.started = threading.Event()
        self.segments = 0

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        self.segments += 1
        if self.segments > 1:
            self.started.set()
            if not self.gate.wait(30):
                raise TimeoutError("test gate never opened")
        return super().synthesize(request, voice)


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


async def test_hostile_uploads_and_ids_on_the_http_edge_get_openais_errors_and_it_keeps_serving(
    settings: Settings, nc: Client, tmp_path: Path
) -> None:
    """Malformed multipart, oversized and trickled parts, odd ids in paths, a double delete at once."""
    app = TtsApp(settings.with_(backends=("piper",), instance="solo"))
    edge = HttpEdge(settings, EdgeSettings(api_keys=("key-of-mallory",)), "127.0.0.1", 0)
    await app.start()
    await edge.start(nc)
    headers = {"Authorization": "Bearer key-of-mallory"}
    try:
        async with httpx2.AsyncClient(base_url=edge.url, headers=headers, timeout=30) as http:
            recording = {"recording": ("r.wav", tone_wav(2.0), "audio/wav")}
            consent = (
                await http.post("/v1/audio/voice_consents", data={"name": "m", "language": "en"}, files=recording)
            ).json()["id"]
            sample = ("s.wav", tone_wav(3.0), "audio/wav")
            mine = {"name": "x", "consent": consent}
            bad_forms: list[tuple[dict[str, Any], dict[str, Any], int]] = [
                (mine, {"audio_sample": ("s.mp3", b"ID3" + bytes(5000), "audio/mpeg")}, 400),  # not WAV
                (mine, {"audio_sample": ("s.wav", b"", "audio/wav")}, 400),
                (mine, {"audio_sample": ("s.wav", b"RIFF" + bytes(40), "audio/wav")}, 400),
                ({"name": "x"}, {"audio_sample": sample, "consent": ("c.txt", consent.encode(), "text/plain")}, 400),
                (mine | {"type": "design"}, {"audio_sample": sample}, 400),
                ({"name": "x" * 70_000, "consent": consent}, {"audio_sample": sample}, 400),
                ({f"f{n}": "v" for n in range(12)} | mine, {"audio_sample": sample}, 400),
                (mine, {"audio_sample": ("s.wav", bytes(11 * 1024 * 1024), "audio/wav")}, 413),
            ]
            for fields, files, status in bad_forms:
                reply = await http.post("/v1/audio/voices", data=fields, files=files)
                assert reply.status_code == status, (list(fields)[:3], reply.text[:300])
                error = reply.json()["error"]
                assert error["message"] and error["fix"] and error["type"], error
            raw = [
                ("multipart/form-data", b"--x\r\nno boundary declared\r\n--x--\r\n"),
                ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="name"\r\n'),
                ("multipart/form-data; boundary=x", b"\x00\xff" * 1000),
                ("multipart/form-data; boundary=" + "b" * 5000, b"--" + b"b" * 5000 + b"--\r\n"),
                ("application/json", b'{"name": "x", "consent": "' + consent.encode() + b'"}'),
            ]
            for content_type, body in raw:
                reply = await http.post("/v1/audio/voices", content=body, headers={"Content-Type": content_type})
                assert reply.status_code == 400, (content_type[:40], reply.text[:300])

            async def trickle() -> Any:  # no Content-Length: refused once past the limit, not read to the end
                chunk = bytes(1024 * 1024)
                for _ in range(12):
                    yield chunk

            reply = await http.post(
                "/v1/audio/voices",
                content=trickle(),
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            )
            assert reply.status_code == 413, reply.text[:300]

            for odd in ("a" * 500, "voice_" + "Ä" * 32, "voice_..%2F..%2Fetc", "%00", "voice_" + "A" * 32):
                assert (await http.delete(f"/v1/audio/voices/{odd}")).status_code == 404, odd[:40]
                assert (await http.get(f"/v1/audio/voice_consents/{odd}")).status_code == 404, odd[:40]
                assert (await http.delete(f"/v1/audio/voice_consents/{odd}")).status_code == 404, odd[:40]
            for path in ("/v1/audio/voices/", "/v1/audio/voice_consents/"):  # an absurd id: a bounded 4xx, no crash
                too_long = await http.delete(path + "a" * 9000)
                assert too_long.status_code in (404, 413) and too_long.json()["error"]["fix"], too_long.text[:200]

            voice = (await http.post("/v1/audio/voices", data=mine, files={"audio_sample": sample})).json()["id"]
            twice = await asyncio.gather(*(http.delete(f"/v1/audio/voices/{voice}") for _ in range(2)))
            assert sorted(r.status_code for r in twice) == [200, 404], [r.text for r in twice]
            assert (await http.get("/v1/audio/voice_consents")).json()["data"][0]["id"] == consent  # still serving
    finally:
        await edge.stop()
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


@pytest.mark.usefixtures("findable_chatterbox")
async def test_an_sse_stream_whose_voice_is_deleted_ends_with_openais_error_event(
    settings: Settings, tmp_path: Path, nc: Client, client: TtsClient
) -> None:
    """Over the edge: the status (200) went out with the first delta, so the end is a speech.audio.error event."""
    own = chatterbox_settings(settings, tmp_path, require_consent=False)
    adapter = GatedChatterbox(own)
    app = TtsApp(own, adapters={"chatterbox": adapter})
    edge = HttpEdge(settings, EdgeSettings(), "127.0.0.1", 0)
    await app.start()
    await edge.start(nc)
    try:
        await next_state(app, "chatterbox", State.LOADED)
        voice = (await client.create_voice(tone_wav(3.0, hz=440.0), language="de"))["voice_profile"]
        text = " ".join(f"Das ist der Satz Nummer {n}, gesprochen in einer geklonten Stimme." for n in range(4))
        body = {"model": "chatterbox", "input": text, "voice": {"id": voice}, "stream_format": "sse"}
        async with httpx2.AsyncClient(base_url=edge.url, timeout=30) as http:
            speaking = asyncio.create_task(http.post("/v1/audio/speech", json=body | {"language": "de"}))
            assert await asyncio.to_thread(adapter.started.wait, 30), "the stream's second segment never started"
            assert await client.delete_voice(voice) == {"deleted": True}
            adapter.gate.set()
            reply = await speaking
        events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
        assert reply.status_code == 200 and events[0]["type"] == "speech.audio.delta", reply.text[:300]
        assert events[-1]["type"] == "speech.audio.error" and events[-1]["error"]["code"] == "unknown_voice", events[-1]
        assert "speech.audio.done" not in [e["type"] for e in events]
    finally:
        adapter.gate.set()
        await edge.stop()
        await app.stop()
