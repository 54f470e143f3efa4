"""Consents on a secured server running the shipped ops/nats-roles.conf: each refusal, by the server or the service.

A translator may record consents, clone under its own and synthesize with the voice; it cannot see,
clone under or delete another tenant's record (the service answers as if there were none) and cannot
reach the operator's subjects over every caller's records (the server refuses the publish). The operator
lists and deletes anyone's records there, and nothing else of a tenant's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import tone_wav
from tests.support.secured import Violations, connect_as, role_passwords, secured_server, server_violations
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.subjects import Subjects, tenant_inbox


@pytest.fixture
def passwords() -> dict[str, str]:
    return role_passwords()


@pytest.fixture
def server(tmp_path: Path, passwords: dict[str, str]):  # type: ignore[no-untyped-def]
    yield from secured_server(tmp_path, passwords)


@contextlib.asynccontextmanager
async def as_user(server: EmbeddedNatsServer, passwords: dict[str, str], user: str) -> AsyncIterator[Client]:
    violations = Violations()
    nc = await connect_as(server.url, user, passwords[user], violations)
    nc.violations = violations  # type: ignore[attr-defined]
    try:
        yield nc
    finally:
        await nc.close()


async def refused_by_server(nc: Client, subject: str) -> None:
    """The server answers the publish with a permissions violation; no service ever sees it."""
    await nc.publish(subject, b"{}", reply=nc.new_inbox())
    await nc.flush()
    await nc.violations.wait_for(subject)  # type: ignore[attr-defined]


async def test_each_refusal_on_the_shipped_roles(
    settings: Settings, server: EmbeddedNatsServer, passwords: dict[str, str]
) -> None:
    service = settings.with_(
        nats_url=server.url,
        nats_user="tts-service",
        nats_password=passwords["tts-service"],
        nats_inbox_prefix=tenant_inbox("tts-service"),
        backends=("piper",),
    )
    s = Subjects()
    app = TtsApp(service)
    await app.start()
    try:
        assert app.registry is not None and await app.registry.actors["piper"].wait_settled(30) is State.LOADED
        async with (
            as_user(server, passwords, "translator-a") as nc_a,
            as_user(server, passwords, "translator-b") as nc_b,
            as_user(server, passwords, "operator") as nc_op,
            as_user(server, passwords, "monitor") as nc_mon,
        ):
            a, b, op = (TtsClient(nc, timeout_s=30, retry_policy=None) for nc in (nc_a, nc_b, nc_op))
            consent = (await a.create_consent(tone_wav(1.0), "speaker A", "en-US"))["id"]
            voice = (await a.create_voice(tone_wav(3.0), consent=consent))["id"]
            # the service: b's requests reach it, and find nothing of a's
            for attempt in (b.consent(consent), b.delete_consent(consent), b.rename_consent(consent, "b's now")):
                with pytest.raises(TtsError) as unknown:
                    await attempt
                assert unknown.value.code is ErrorCode.UNKNOWN_VOICE
            assert (await b.list_consents())["data"] == []
            with pytest.raises(TtsError) as refused:
                await b.create_voice(tone_wav(3.0), consent=consent)
            assert refused.value.code is ErrorCode.CONSENT_REQUIRED
            # the server: a translator never reaches the operator's subjects; the monitor reaches no consent subject
            for action in ("list", "delete"):
                await refused_by_server(nc_b, s.consents_admin(action))
            await refused_by_server(nc_mon, s.consents("list"))
            await refused_by_server(nc_mon, s.consents_admin("list"))
            # nor does the operator make or read a tenant's records as if it were that tenant
            await refused_by_server(nc_op, s.consents("create"))
            await refused_by_server(nc_op, s.voices_create)
            # the operator: sees every caller's records, and deletes a's, with the voice made under it
            assert consent in {c["id"] for c in (await op.list_consents(every_caller=True))["data"]}
            deleted = await op.delete_consent(consent, every_caller=True)
            assert deleted["voices_deleted"] == [voice]
            assert (await a.list_consents())["data"] == []
            assert nc_a.violations.errors == []  # type: ignore[attr-defined]
    finally:
        await app.stop()
    refusals = server_violations(server)
    assert any("translator-b" in line for line in refusals)  # the server's lines name the user...
    assert not [line for line in refusals if "tts-service" in line]  # ...and the service was refused nothing
