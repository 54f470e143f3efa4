"""Voice profiles through the service, on a real nats-server: created on one instance, read on another."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from tests.support.backends import tone_wav
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import read_wav
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.synthesis.profiles import ProfileStore


@contextlib.asynccontextmanager
async def two_instances(settings: Settings) -> AsyncIterator[list[TtsApp]]:
    # profiles as such, made without consent records (the rule that asks for them: test_consents.py)
    apps = [TtsApp(settings.with_(instance=f"p{i}", backends=("piper",), require_consent=False)) for i in range(2)]
    try:
        for app in apps:
            await app.start()
        yield apps
    finally:
        for app in apps:
            await app.stop()


async def test_a_profile_created_through_the_service_is_read_by_another_instance(
    settings: Settings, client: TtsClient
) -> None:
    clip = tone_wav(3.0, rate=22050)
    async with two_instances(settings) as apps:
        created = await client.create_voice(clip, reference_text="A tone, spoken.", language="DE")
        profile_id = created["voice_profile"]
        assert len(profile_id) == 38 and profile_id.startswith("voice_")
        assert (created["duration_ms"], created["language"]) == (3000, "de")
        assert "digest" not in created
        for app in apps:  # whichever instance stored it, each reads it from the shared bucket
            assert app.service is not None
            profile = await app.service.profiles.get(profile_id)
            assert (profile.reference_text, profile.language) == ("A tone, spoken.", "de")
            stored = read_wav(profile.audio)
            assert (stored.sample_rate, round(stored.duration_s, 2)) == (22050, 3.0)
            assert stored.pcm == read_wav(clip).pcm


async def test_ids_are_random_and_nothing_lists_them(settings: Settings, client: TtsClient, nc: Client) -> None:
    clip = tone_wav(2.0)
    async with two_instances(settings) as apps:
        ids = {(await client.create_voice(clip))["voice_profile"] for _ in range(3)}
        assert len(ids) == 3  # the same clip three times: three unrelated ids
        profiles = [await apps[0].service.profiles.get(i) for i in ids]  # type: ignore[union-attr]
        assert len({p.digest for p in profiles}) == 1  # caches may share by the clip's digest
        voices = json.dumps(await client.voices())
        info = json.loads((await nc.request("$SRV.INFO.tts", b"", timeout=5)).data)
        assert not any(i in voices for i in ids)
        names = {e["name"] for e in info["endpoints"]}
        assert {"voices_create", "voices_delete"} <= names
        assert not any(n.startswith("voices") and "list" in n for n in names)


async def test_delete_removes_it_for_every_instance(settings: Settings, client: TtsClient) -> None:
    async with two_instances(settings) as apps:
        profile_id = (await client.create_voice(tone_wav(2.0)))["voice_profile"]
        assert (await client.delete_voice(profile_id)) == {"deleted": True}
        for app in apps:
            with pytest.raises(TtsError) as caught:
                await app.service.profiles.get(profile_id)  # type: ignore[union-attr]
            assert caught.value.code.value == "unknown_voice"
        assert (await client.delete_voice(profile_id)) == {"deleted": False}
        assert (await client.delete_voice("../../etc/passwd")) == {"deleted": False}  # malformed: just unknown


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"reference_audio": "bm90IGEgd2F2"}, "invalid_request", "not a WAV"),
        ({"reference_audio": "***"}, "invalid_request", "base64"),
        ({}, "invalid_request", "required"),
        ({"reference_audio": "SHORT"}, "invalid_request", "at least 1"),
        ({"reference_audio": "OK", "language": "english"}, "invalid_request", "ISO 639-1"),
        ({"reference_audio": "OK", "reference_text": "x" * 1001}, "invalid_request", "limit is 1000"),
        ({"reference_audio": "OK", "owner": "me"}, "invalid_request", "unknown fields"),
    ],
)
async def test_bad_clips_get_a_structured_error_and_the_service_goes_on(
    settings: Settings, nc: Client, body: dict, code: str, words: str
) -> None:
    wavs = {"SHORT": tone_wav(0.5), "OK": tone_wav(2.0)}
    body = {k: base64.b64encode(wavs[v]).decode() if v in wavs else v for k, v in body.items()}
    async with two_instances(settings):
        reply = await nc.request("tts.voices.create", json.dumps(body).encode(), timeout=10)
        assert reply.headers and reply.headers["Tts-Error-Code"] == code
        error = json.loads(reply.data)["error"]
        assert words in error["message"] and error["fix"]
        assert (await TtsClient(nc).health())["status"] in ("ok", "starting")


async def test_the_store_alone_round_trips(settings: Settings) -> None:
    """The store module as phase 2 will use it: create, get by id, delete, with no service in between."""
    from tts_actor.synthesis.profiles import NewProfile

    async with await nats.connect(settings.nats_url or "") as nc:
        store = ProfileStore(nc, settings)
        profile = await store.create(NewProfile(tone_wav(1.5), None, None))
        again = await store.get(profile.id)
        assert (again.digest, again.audio, again.duration_ms) == (profile.digest, profile.audio, 1500)
        assert await store.delete(profile.id) is True
        with pytest.raises(TtsError):
            await store.get(profile.id)


def test_a_clip_over_the_limit_is_refused_before_decoding(settings: Settings) -> None:
    """Over 2 MiB of WAV (more than a stock server carries, so checked on the parser)."""
    from tts_actor.synthesis.profiles import parse_create_request

    big = json.dumps({"reference_audio": base64.b64encode(tone_wav(70.0, rate=16000)).decode()}).encode()
    with pytest.raises(TtsError) as caught:
        parse_create_request(big, settings)
    assert caught.value.code.value == "payload_too_large"
    with pytest.raises(TtsError) as caught:
        parse_create_request(big, settings.with_(max_request_bytes=1024))
    assert caught.value.code.value == "payload_too_large" and "1024" in caught.value.message
