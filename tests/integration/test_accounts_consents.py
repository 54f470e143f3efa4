"""Consents and voices across NATS accounts: the shipped ops/nats-accounts.conf on a real nats-server.

Through a service import the server rewrites every organisation's reply subject to ``_R_.<...>``; the
service names the caller by the ``Nats-Request-Info`` header the server adds (``share: true``). Org A
records a consent, clones a voice and speaks with it; org B reaches the same endpoints and finds nothing
of A's, even when it forges the header; no client, not even one in the service's own account, may send
a ``_R_.`` reply of its own. Chatterbox is the stand-in package of tests/support/stand_in_chatterbox.py
(its weights cannot run here); the server, JetStream, the service and its endpoints are real.
"""

from __future__ import annotations

import importlib.machinery
import json
import secrets
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from statemachine import State
from tests.support.backends import install_stand_in, next_state, tone_wav
from tests.support.secured import OPS, Violations, connect_as, server_violations
from tests.support.stand_in_chatterbox import checkpoint, dominant_hz, stand_in_chatterbox  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import read_wav
from tts_actor.client.audit import read_audit
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.caller import REQUEST_INFO_HEADER
from tts_actor.wire.messages import SynthesisRequest

CLIP_HZ = 440.0
FORGED = {REQUEST_INFO_HEADER: json.dumps({"acc": "ORG_A", "user": "org-a"})}


@pytest.fixture
def findable_chatterbox(stand_in_chatterbox: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The service's package probe (importlib.util.find_spec) finds the stand-ins; torchaudio is one too."""
    if "torchaudio" not in sys.modules:
        install_stand_in(monkeypatch, "torchaudio")
    for name in ("chatterbox", "torchaudio"):
        monkeypatch.setattr(sys.modules[name], "__spec__", importlib.machinery.ModuleSpec(name, None), raising=False)


def pitch(wav: bytes) -> float:
    audio = read_wav(wav)
    return dominant_hz(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate)


@pytest.mark.usefixtures("findable_chatterbox")
async def test_each_organisation_owns_its_consents_and_voices_across_accounts(tmp_path: Path) -> None:
    passwords = {name: secrets.token_hex(12) for name in ("SERVICE", "OPERATOR", "ORG_A", "ORG_B")}
    shutil.copy(OPS / "nats-accounts.conf", tmp_path / "nats-accounts.conf")
    (tmp_path / "server.conf").write_text("include ./nats-accounts.conf\n")
    env = {f"TTS_{name}_PASSWORD": password for name, password in passwords.items()}
    server = EmbeddedNatsServer(tmp_path / "js", port=-1, config=tmp_path / "server.conf", env=env)
    server.start()
    checkpoint(tmp_path / "ckpt" / "multilingual", multilingual=True)
    try:
        settings = load_settings(
            {"NATS_URL": server.url, "NATS_USER": "tts-service", "NATS_PASSWORD": passwords["SERVICE"]}
        ).with_(
            backends=("chatterbox",),
            language_overrides={"chatterbox": ("de", "fr")},
            local_model_dirs={"chatterbox": tmp_path / "ckpt"},
            allow_download=False,
            cache_dir=tmp_path / "cache",
            instance="accounts",
            metrics_port=0,
        )
        app = TtsApp(settings)
        await app.start()
        seen = {user: Violations() for user in ("org-a", "org-b", "operator")}
        password = {"org-a": passwords["ORG_A"], "org-b": passwords["ORG_B"], "operator": passwords["OPERATOR"]}
        conns = {user: await connect_as(server.url, user, password[user], seen[user]) for user in seen}
        try:
            await next_state(app, "chatterbox", State.LOADED, timeout_s=30)
            a, b = (TtsClient(conns[user], timeout_s=30, retry_policy=None) for user in ("org-a", "org-b"))
            # org A: a consent, a voice cloned under it, speech in that voice
            consent = (await a.create_consent(tone_wav(1.0), "speaker A", "en"))["id"]
            created = await a.create_voice(
                tone_wav(3.0, hz=CLIP_HZ), reference_text="A tone.", language="en", consent=consent
            )
            spoken = await a.synthesize(
                SynthesisRequest(text="Guten Tag.", language="de", voice_profile=created["voice_profile"], cache=False)
            )
            assert pitch(spoken.audio) == pytest.approx(CLIP_HZ, abs=5)
            assert [c["id"] for c in (await a.list_consents())["data"]] == [consent]
            # org B: the same endpoints, none of A's records
            for attempt in (b.consent(consent), b.delete_consent(consent), b.rename_consent(consent, "b's now")):
                with pytest.raises(TtsError) as unknown:
                    await attempt
                assert unknown.value.code is ErrorCode.UNKNOWN_VOICE
            assert (await b.list_consents())["data"] == []
            with pytest.raises(TtsError) as refused:
                await b.create_voice(tone_wav(3.0), consent=consent)
            assert refused.value.code is ErrorCode.CONSENT_REQUIRED
            assert (await b.delete_voice(created["id"]))["deleted"] is False
            # B forging A's Nats-Request-Info: the server replaces the header with its own
            forged = await conns["org-b"].request("tts.consents.list", b"{}", timeout=10, headers=FORGED)
            assert json.loads(forged.data)["data"] == []
            # nobody sends a service-import reply of its own, not even a user of the service's account
            await conns["operator"].publish("tts.consents.list", b"{}", reply="_R_.forged.x", headers=FORGED)
            await conns["operator"].flush()
            await seen["operator"].wait_for("_R_.forged.x")
            # A's records are intact and named by A's account and user
            assert [c["id"] for c in (await a.list_consents())["data"]] == [consent]
            assert (await a.delete_consent(consent))["voices_deleted"] == [created["id"]]
            await app.service.audit.drain()  # type: ignore[union-attr]
            actors = {event["actor"] for event in await read_audit(conns["operator"])}
            assert actors == {"acct:ORG_A/org-a"}, actors
            assert seen["org-a"].errors == [] and seen["org-b"].errors == []
        finally:
            for nc in conns.values():
                await nc.close()
            await app.stop()
        assert [line for line in server_violations(server) if "_r_.forged" not in line.lower()] == []
    finally:
        server.stop()
