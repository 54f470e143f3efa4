"""Consent records and the voices made under them, through the service on a real nats-server.

Two callers connect with their own inbox prefixes (``_INBOX_alice``, ``_INBOX_bob``), as users of a
secured server do; the service tells them apart by that alone. The roles that keep a translator off the
operator's subjects are proved on a secured server in test_security_consents.py.
"""

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
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError

RECORDING = tone_wav(2.0, hz=300.0)  # "I agree that my voice may be cloned", as far as the service can tell


@contextlib.asynccontextmanager
async def service(settings: Settings, **changes: object) -> AsyncIterator[TtsApp]:
    app = TtsApp(settings.with_(backends=("piper",), **changes))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def caller(url: str, user: str) -> AsyncIterator[tuple[TtsClient, Client]]:
    nc = await nats.connect(url, inbox_prefix=f"_INBOX_{user}", connect_timeout=2, allow_reconnect=False)
    try:
        yield TtsClient(nc, timeout_s=30, retry_policy=None), nc
    finally:
        await nc.close()


async def test_a_consent_is_its_creators_alone_and_deleting_it_deletes_its_voices(settings: Settings) -> None:
    url = settings.nats_url or ""
    async with service(settings) as app, caller(url, "alice") as (alice, _), caller(url, "bob") as (bob, _):
        created = await alice.create_consent(RECORDING, "Alice, in English", "en-US")
        assert set(created) == {"id", "object", "name", "language", "created_at"}
        assert created["object"] == "audio.voice_consent" and created["id"].startswith("cons_")
        assert (created["name"], created["language"]) == ("Alice, in English", "en-US")
        consent = created["id"]
        assert await alice.consent(consent) == created
        assert (await alice.rename_consent(consent, "Alice"))["name"] == "Alice"
        # bob can neither read, rename, list, delete nor clone with alice's record: it does not exist for him
        for attempt in (bob.consent(consent), bob.rename_consent(consent, "mine"), bob.delete_consent(consent)):
            with pytest.raises(TtsError) as unknown:
                await attempt
            assert unknown.value.code is ErrorCode.UNKNOWN_VOICE
        assert (await bob.list_consents())["data"] == []
        with pytest.raises(TtsError) as refused:
            await bob.create_voice(tone_wav(3.0), consent=consent)
        assert refused.value.code is ErrorCode.CONSENT_REQUIRED and refused.value.fix
        # the HTTP edge's keys are identities below its NATS user: alice's key "k1" is not alice
        with pytest.raises(TtsError):
            await alice.consent(consent, caller="http:k1")
        # alice clones under her consent; deleting the consent deletes the voice, everywhere
        voice = await alice.create_voice(tone_wav(3.0), consent=consent, name="Alice's voice")
        assert voice["id"].startswith("voice_") and voice["consent"] == consent and voice["object"] == "audio.voice"
        other = await alice.create_voice(tone_wav(3.0), consent=consent)
        assert (await bob.delete_voice(other["id"])) == {"deleted": False}  # not his: as if there were none
        deleted = await alice.delete_consent(consent)
        assert deleted["deleted"] is True and sorted(deleted["voices_deleted"]) == sorted([voice["id"], other["id"]])
        for voice_id in (voice["id"], other["id"]):
            with pytest.raises(TtsError) as gone:
                await app.service.profiles.get(voice_id)  # type: ignore[union-attr]
            assert gone.value.code is ErrorCode.UNKNOWN_VOICE
        with pytest.raises(TtsError):
            await alice.consent(consent)


async def test_a_voice_without_a_valid_consent_is_refused_and_the_switch_turns_the_rule_off(
    settings: Settings,
) -> None:
    url = settings.nats_url or ""
    async with service(settings), caller(url, "alice") as (alice, _):
        for consent in (None, "cons_" + "A" * 32, "not-an-id"):
            with pytest.raises(TtsError) as refused:
                await alice.create_voice(tone_wav(3.0), consent=consent)
            assert refused.value.code is ErrorCode.CONSENT_REQUIRED
            assert refused.value.service_status == 400 and "consent" in refused.value.fix
        assert (await alice.voices(profiles=True))["profiles"]["total"] == 0
    async with service(settings, require_consent=False), caller(url, "alice") as (alice, _):
        legacy = await alice.create_voice(tone_wav(3.0))
        assert legacy["consent"] is None
        report = (await alice.voices(profiles=True))["profiles"]
        assert (report["total"], report["consented"], report["require_consent"]) == (1, 0, False)
        assert report["unconsented"][0]["id"] == legacy["id"][:10] + "…"
        assert "profiles" not in await alice.voices()  # the edge's voice list does not pay for the report


async def test_pages_follow_the_cursor_and_the_operator_subject_sees_everyone(settings: Settings) -> None:
    url = settings.nats_url or ""
    async with service(settings), caller(url, "alice") as (alice, _), caller(url, "bob") as (bob, _):
        mine = [(await alice.create_consent(RECORDING, f"take {n}", "de"))["id"] for n in range(5)]
        theirs = (await bob.create_consent(RECORDING, "bob", "fr-CA"))["id"]
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            page = await alice.list_consents(after=after, limit=2)
            assert page["object"] == "list" and len(page["data"]) <= 2
            seen += [c["id"] for c in page["data"]]
            pages += 1
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert pages == 3 and sorted(seen) == sorted(mine) and len(set(seen)) == 5
        everyone = await alice.list_consents(limit=100, every_caller=True)
        assert {c["id"] for c in everyone["data"]} == {*mine, theirs}
        assert (await alice.delete_consent(theirs, every_caller=True))["deleted"] is True
        assert (await bob.list_consents())["data"] == []


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("subject", "body", "words"),
    [
        ("create", {"name": "x" * 257, "language": "en", "recording": _b64(RECORDING)}, "limit is 256"),
        ("create", {"name": "a\x00b", "language": "en", "recording": _b64(RECORDING)}, "control character"),
        ("create", {"name": "a", "language": "english please", "recording": _b64(RECORDING)}, "BCP-47"),
        ("create", {"name": "a", "language": "en", "recording": _b64(b"just some text, not audio")}, "not audio"),
        ("create", {"name": "a", "language": "en", "recording": "***"}, "base64"),
        ("create", {"name": "a", "language": "en"}, "'recording' is required"),
        ("create", {"name": "a", "language": "en", "recording": _b64(RECORDING), "owner": "x"}, "unknown fields"),
        ("list", {"limit": 101}, "from 1 to 100"),
        ("list", {"limit": 0}, "from 1 to 100"),
        ("list", {"after": 5}, "'after'"),
        ("get", {"id": "x" * 65}, "'id'"),
        ("update", {"id": "cons_x", "name": ""}, "non-empty"),
    ],
)
async def test_bad_input_gets_a_structured_error_and_the_service_goes_on(
    settings: Settings, nc: Client, subject: str, body: dict[str, object], words: str
) -> None:
    async with service(settings):
        reply = await nc.request(f"tts.consents.{subject}", json.dumps(body).encode(), timeout=10)
        assert reply.headers and reply.headers["Tts-Error-Code"] == "invalid_request"
        error = json.loads(reply.data)["error"]
        assert words in error["message"] and error["fix"]
        assert (await TtsClient(nc).health())["status"] in ("ok", "starting")


async def test_a_malformed_caller_header_is_refused(settings: Settings, nc: Client) -> None:
    async with service(settings):
        with pytest.raises(TtsError) as refused:
            await TtsClient(nc).list_consents(caller="http:" + "k" * 80)
        assert refused.value.code is ErrorCode.INVALID_REQUEST and "Tts-Caller" in refused.value.message
