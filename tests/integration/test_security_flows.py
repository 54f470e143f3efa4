"""Secure as deployed: the shipped ops/nats-roles.conf carries every real flow of a two-instance fleet.

A real nats-server runs the repository's role file; two service instances connect as ``tts-service``
(``a`` with the real Piper voice, ``b`` with a corrupt one, so ``b`` forwards to ``a``); two translator
tenants and an operator connect as themselves. After synthesis, streams, cancel, the hop, voice profiles,
the audio cache, status/health/voices and ``$SRV`` stats the server has logged no permission violation.
Then translator-b attacks translator-a's replies and fails.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from statemachine import State
from tests.support.backends import tone_wav
from tests.support.fleet import piper_loaded_on_a_only
from tests.support.helpers import wav_info
from tests.support.secured import OPS, Violations, connect_as, role_passwords, secured_server, server_violations
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.observability import metrics
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.subjects import tenant_inbox

LONG = " ".join(f"This is sentence number {n} of a text long enough to keep the engine busy." for n in range(10))


def permission_errors() -> float:
    return sum(metrics.NATS_PERMISSION_ERRORS.labels(op)._value.get() for op in ("publish", "subscription"))


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, server: EmbeddedNatsServer, password: str) -> AsyncIterator[tuple[TtsApp, TtsApp]]:
    """Two instances as tts-service, configured from the environment the way a deployment is."""
    base = load_settings(
        {
            "NATS_URL": server.url,
            "NATS_USER": "tts-service",
            "NATS_PASSWORD": password,
            "NATS_INBOX_PREFIX": tenant_inbox("tts-service"),
        }
    ).with_(backends=("piper",), allow_download=False, retry_max_attempts=0)
    async with piper_loaded_on_a_only(base, tmp_path) as apps:
        yield apps


@pytest.fixture
def passwords() -> dict[str, str]:
    return role_passwords()


@pytest.fixture
def server(tmp_path: Path, passwords: dict[str, str]):  # type: ignore[no-untyped-def]
    yield from secured_server(tmp_path, passwords)


async def _flows(a: TtsApp, b: TtsApp, tenant: TtsClient, operator: Client) -> None:
    # synthesis through the shared queue group, until one went through b's hop to a
    for _ in range(30):
        reply = await tenant.synthesize(SynthesisRequest(text="Secured and served."))
        assert wav_info(reply.audio).frames > 0
        if b.service.routing.forwarded:  # type: ignore[union-attr]
            break
    assert b.service.routing.forwarded >= 1  # type: ignore[union-attr]
    # a stream (long enough to span segments), whichever instance takes it
    chunks = [chunk async for chunk in tenant.stream(SynthesisRequest(text=LONG[:300]))]
    assert len(chunks) >= 2
    # cancel: reaches the instance serving the stream, which ends it with ``cancelled``
    stream = tenant.stream(SynthesisRequest(text=LONG))
    await stream.__anext__()
    await tenant.cancel(stream.request_id)
    with pytest.raises(TtsError) as cancelled:
        async for _ in stream:
            pass
    assert cancelled.value.code is ErrorCode.CANCELLED
    # the audio cache: the first answer is stored (object store chunks), the second is a hit
    request = SynthesisRequest(text="Cached once, heard twice.", backend="piper")
    first = await tenant.synthesize(request)
    for app in (a, b):
        await app.service.cached.drain()  # type: ignore[union-attr]
    second = await tenant.synthesize(request)
    assert first.headers.get(Header.CACHE.value) == "miss" and second.headers.get(Header.CACHE.value) == "hit"
    assert second.audio == first.audio
    # a consent record and a voice profile under it: stored in their object stores, then deleted
    consent = await tenant.create_consent(tone_wav(1.0), "a speaker", "en-US")
    assert (await tenant.list_consents())["data"] == [consent]
    profile = await tenant.create_voice(tone_wav(3.0), reference_text="A tone.", language="en", consent=consent["id"])
    assert (await tenant.delete_voice(profile["voice_profile"]))["deleted"] is True
    assert (await tenant.delete_consent(consent["id"]))["deleted"] is True
    # the small endpoints
    assert "piper" in (await tenant.voices())["backends"]
    assert (await tenant.status())["instance"] in ("a", "b")
    assert await tenant.health()
    # the operator's $SRV stats
    stats = json.loads((await operator.request("$SRV.STATS.tts", b"", timeout=5)).data)
    assert {e["name"] for e in stats["endpoints"]} >= {"synthesize", "voices_create"}


async def test_the_shipped_roles_carry_every_flow_of_the_fleet(
    tmp_path: Path, server: EmbeddedNatsServer, passwords: dict[str, str]
) -> None:
    refused_before = permission_errors()
    seen = {user: Violations() for user in ("translator-a", "operator")}
    async with fleet(tmp_path, server, passwords["tts-service"]) as (a, b):
        nc_a = await connect_as(server.url, "translator-a", passwords["translator-a"], seen["translator-a"])
        operator = await connect_as(server.url, "operator", passwords["operator"], seen["operator"])
        try:
            await _flows(a, b, TtsClient(nc_a, timeout_s=60, retry_policy=None), operator)
        finally:
            await nc_a.close()
            await operator.close()
    assert server_violations(server) == []
    assert permission_errors() == refused_before  # the service was refused nothing
    assert seen["translator-a"].errors == [] and seen["operator"].errors == []


async def test_a_tenant_can_neither_read_nor_spoil_another_tenants_replies(
    tmp_path: Path, server: EmbeddedNatsServer, passwords: dict[str, str]
) -> None:
    seen_a, seen_b = Violations(), Violations()
    async with fleet(tmp_path, server, passwords["tts-service"]):
        nc_a = await connect_as(server.url, "translator-a", passwords["translator-a"], seen_a)
        nc_b = await connect_as(server.url, "translator-b", passwords["translator-b"], seen_b)
        try:
            victim = TtsClient(nc_a, timeout_s=60, retry_policy=None)
            # b may not listen on a's inbox, nor on the default one
            await nc_b.subscribe(f"{tenant_inbox('translator-a')}.>")
            await nc_b.subscribe("_INBOX.>")
            await nc_b.flush()
            await seen_b.wait_for(tenant_inbox("translator-a"), "_INBOX.>")
            # a streams; b learns its inbox (as an attacker who guessed it) and attacks it twice
            stream = victim.stream(SynthesisRequest(text=LONG))
            chunks = [await stream.__anext__()]
            inbox = stream._inbox.sub.subject
            await nc_b.publish(inbox, b"forged", headers={Header.STREAM_END.value: "1"})  # refused by the server
            # the service's error for b's bad request goes to a's inbox (b named it as the reply subject)
            await nc_b.publish("tts.synthesize", json.dumps({"text": ""}).encode(), reply=inbox)
            await nc_b.flush()
            chunks += [chunk async for chunk in stream]
            assert len(chunks) >= 2 and stream.end_headers  # a's stream completed with its audio
            await seen_b.wait_for(inbox)
            assert victim.foreign_dropped >= 1  # the service's reply to b's request, dropped by a's client
            assert seen_a.errors == []
            # and a's next request is unharmed
            assert wav_info((await victim.synthesize(SynthesisRequest(text="Still mine."))).audio).frames > 0
        finally:
            await nc_a.close()
            await nc_b.close()


async def test_separate_organisations_in_accounts_reach_the_service_and_never_each_other(tmp_path: Path) -> None:
    """ops/nats-accounts.conf: the service exports its endpoints, each organisation's account imports them."""
    passwords = {name: secrets.token_hex(12) for name in ("SERVICE", "OPERATOR", "ORG_A", "ORG_B")}
    shutil.copy(OPS / "nats-accounts.conf", tmp_path / "nats-accounts.conf")
    (tmp_path / "server.conf").write_text("include ./nats-accounts.conf\n")
    env = {f"TTS_{name}_PASSWORD": password for name, password in passwords.items()}
    server = EmbeddedNatsServer(tmp_path / "js", port=-1, config=tmp_path / "server.conf", env=env)
    server.start()
    try:
        settings = load_settings(
            {"NATS_URL": server.url, "NATS_USER": "tts-service", "NATS_PASSWORD": passwords["SERVICE"]}
        ).with_(backends=("piper",), allow_download=False, cache_dir=tmp_path / "cache", instance="accounts")
        app = TtsApp(settings)
        await app.start()
        try:
            assert await app.registry.actors["piper"].wait_settled(30) is State.LOADED  # type: ignore[union-attr]
            org_a = await nats.connect(server.url, user="org-a", password=passwords["ORG_A"], allow_reconnect=False)
            org_b = await nats.connect(server.url, user="org-b", password=passwords["ORG_B"], allow_reconnect=False)
            try:
                everything_b_sees = await org_b.subscribe(">")
                await org_b.flush()
                tenant = TtsClient(org_a, timeout_s=60, retry_policy=None)
                chunks = [chunk async for chunk in tenant.stream(SynthesisRequest(text=LONG[:200]))]
                assert len(chunks) >= 2
                assert wav_info((await tenant.synthesize(SynthesisRequest(text="Across accounts."))).audio).frames
                assert (await tenant.status())["instance"] == "accounts"
                await org_b.flush()
                assert everything_b_sees.pending_msgs == 0  # nothing of a's traffic exists in b's account
            finally:
                await org_a.close()
                await org_b.close()
        finally:
            await app.stop()
        assert server_violations(server) == []
    finally:
        server.stop()
