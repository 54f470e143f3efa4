"""The audit trail: voice create/delete and cloned syntheses as events in a JetStream stream, read back after a restart.

A real nats-server (also one with the shipped roles) and TtsApp; Chatterbox is the stand-in package of
tests/support/stand_in_chatterbox.py (its weights cannot run here), so that a cloned voice can be spoken.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import next_state, tone_wav
from tests.support.secured import Violations, connect_as, role_passwords, secured_server, server_violations
from tests.support.stand_in_chatterbox import chatterbox_settings, checkpoint, findable_chatterbox, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.client.audit import read_audit
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings, load_settings
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.subjects import Subjects

SECRET_TEXT = "Meet me at the old mill at midnight, bring the ledger."
SECRET_TRANSCRIPT = "My voice is my passport, verify me."


@pytest.mark.usefixtures("findable_chatterbox")
async def test_voice_create_delete_and_cloned_synthesis_are_kept_in_the_audit_stream_across_a_restart(
    settings: Settings, tmp_path: Path, nats_url: str, nc: Client
) -> None:
    tenant = await nats.connect(nats_url, inbox_prefix="_INBOX_translator-a", allow_reconnect=False)
    client = TtsClient(tenant, timeout_s=60, retry_policy=None)
    first = TtsApp(chatterbox_settings(settings, tmp_path, "first", audit_max_age_s=3600.0))
    await first.start()
    clip = tone_wav(3.0, hz=440.0)
    try:
        await next_state(first, "chatterbox", State.LOADED)
        consent = (await client.create_consent(tone_wav(2.0, hz=300.0), "The speaker", "de-DE"))["id"]
        created = await client.create_voice(clip, reference_text=SECRET_TRANSCRIPT, language="de", consent=consent)
        voice_id = created["voice_profile"]
        await client.synthesize(SynthesisRequest(text=SECRET_TEXT, language="de", voice_profile=voice_id))
        await client.synthesize(SynthesisRequest(text="Ohne geklonte Stimme.", language="de"))  # not audited
        assert (await client.delete_consent(consent))["voices_deleted"] == [voice_id]  # the voice goes with it
        await first.service.audit.drain()  # type: ignore[union-attr]
    finally:
        await first.stop()
    second = TtsApp(chatterbox_settings(settings, tmp_path, "second", audit_max_age_s=3600.0))  # the service restarted
    await second.start()
    try:
        events = await read_audit(nc)
        deletes = await read_audit(nc, action="voice_delete")
        consents = await read_audit(nc, action="consent_create")
    finally:
        await second.stop()
        await tenant.close()

    by_action = {event["action"]: event for event in events}
    expected = ["consent_create", "voice_create", "synthesize", "voice_delete", "consent_delete"]
    assert [e["action"] for e in events] == expected, events
    for event in events:
        assert event["actor"] == "translator-a" and event["instance"] == "first"
        assert event["id"] == (consent if event["action"].startswith("consent") else voice_id)
        assert datetime.fromisoformat(event["at"]).tzinfo is not None
    assert by_action["voice_create"]["consent"] == consent and by_action["consent_delete"]["voices_deleted"] == 1
    assert by_action["synthesize"]["backend"] == "chatterbox" and by_action["synthesize"]["language"] == "de"
    assert deletes == [by_action["voice_delete"]] and consents == [by_action["consent_create"]]

    # never the text or the audio: read the raw messages the stream keeps
    subjects = Subjects()
    js = nc.jetstream()
    info = await js.stream_info(subjects.audit_stream)
    assert info.config.max_age == 3600.0 and info.config.subjects == ["tts.audit.>"]
    raw = [await js.get_msg(subjects.audit_stream, seq) for seq in range(1, info.state.last_seq + 1)]
    assert [m.subject for m in raw] == [f"tts.audit.{action}" for action in expected]
    blob = b"".join(m.data or b"" for m in raw)
    for secret in (SECRET_TEXT, SECRET_TRANSCRIPT, "midnight", "passport"):
        assert secret.encode() not in blob
    assert base64.b64encode(clip[44:80]) not in blob and clip[44:80] not in blob
    assert all(len(m.data or b"") < 400 for m in raw), [len(m.data or b"") for m in raw]
    assert all(set(json.loads(m.data or b"{}")) >= {"action", "actor", "id", "at", "instance"} for m in raw)


async def test_a_trail_never_written_reads_empty(nc: Client) -> None:
    assert await read_audit(nc) == []


async def test_on_the_shipped_roles_the_service_writes_the_trail_readers_read_it_and_nobody_forges_it(
    tmp_path: Path,
) -> None:
    passwords = role_passwords()
    for server in secured_server(tmp_path, passwords):
        settings = load_settings(
            {
                "NATS_URL": server.url,
                "NATS_USER": "tts-service",
                "NATS_PASSWORD": passwords["tts-service"],
                "NATS_INBOX_PREFIX": "_INBOX_tts-service",
            }
        ).with_(cache_dir=tmp_path / "cache", instance="secured", backends=("piper",), allow_download=False)
        app = TtsApp(settings)
        await app.start()
        seen = {user: Violations() for user in ("translator-a", "monitor", "operator")}
        conns = {user: await connect_as(server.url, user, passwords[user], seen[user]) for user in seen}
        try:
            tenant = TtsClient(conns["translator-a"], timeout_s=30, retry_policy=None)
            consent = await tenant.create_consent(tone_wav(2.0), "the speaker", "en")
            created = await tenant.create_voice(tone_wav(3.0), language="en", consent=consent["id"])
            assert (await tenant.delete_voice(created["voice_profile"]))["deleted"] is True
            await app.service.audit.drain()  # type: ignore[union-attr]
            for reader in ("monitor", "operator"):  # may read the trail (and listen to it live)
                events = await read_audit(conns[reader], timeout_s=2)
                assert [(e["action"], e["actor"]) for e in events] == [
                    ("consent_create", "translator-a"),
                    ("voice_create", "translator-a"),
                    ("voice_delete", "translator-a"),
                ], seen[reader].errors
                await conns[reader].subscribe("tts.audit.>")
            # nobody but the service writes it; a translator does not read it
            for user in seen:
                await conns[user].publish("tts.audit.voice_delete", b'{"forged": true}')
            with pytest.raises(Exception):  # noqa: B017 - refused: nats-py reports a timeout or a permission error
                await read_audit(conns["translator-a"], timeout_s=1)
            for user, violations in seen.items():
                await conns[user].flush()
                await violations.wait_for("tts.audit.voice_delete")
            assert len(await read_audit(conns["monitor"], timeout_s=2)) == 3, "a forged event reached the stream"
            assert server_violations(server) and not any("tts-service" in line for line in server_violations(server))
        finally:
            for conn in conns.values():
                await conn.close()
            await app.stop()
