"""A secured nats-server: the roles of ops/nats-roles.conf, and every way the service can authenticate.

The server is the real binary started with the repository's own role file (passwords from the environment,
as in production, here random per test); TLS certificates are made at test time with ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client

from statemachine import State
from tests.support.helpers import wav_info
from tests.support.secured import OPS, Violations, connect_as, role_passwords, secured_server
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings, load_settings
from tts_actor.errors import TtsError
from tts_actor.nats_edge.auth import connect_options
from tts_actor.nats_edge.connection import NatsUnreachable, connect
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.roles import roles


def start_server(tmp_path: Path, body: str, env: dict[str, str] | None = None, scheme: str = "nats") -> Iterator[str]:
    conf = tmp_path / "server.conf"
    conf.write_text(body)
    server = EmbeddedNatsServer(tmp_path / "js", port=-1, config=conf, env=env, scheme=scheme)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def passwords() -> dict[str, str]:
    return role_passwords()


@pytest.fixture
def secured_url(tmp_path: Path, passwords: dict[str, str]) -> Iterator[str]:
    """nats-server with JetStream and the repository's role file, exactly as ops/nats.conf includes it."""
    for server in secured_server(tmp_path, passwords):
        yield server.url


@pytest.fixture
async def secured_service(secured_url: str, passwords: dict[str, str], tmp_path: Path) -> AsyncIterator[TtsApp]:
    settings = load_settings(
        {
            "NATS_URL": secured_url,
            "NATS_USER": "tts-service",
            "NATS_PASSWORD": passwords["tts-service"],
            "NATS_INBOX_PREFIX": "_INBOX_tts-service",
        }
    ).with_(cache_dir=tmp_path / "cache", instance="secured", backends=("piper",), allow_download=False)
    app = TtsApp(settings)
    await app.start()
    assert app.registry is not None and await app.registry.actors["piper"].wait_settled(30) is State.LOADED
    assert app.publisher is not None
    await app.publisher.flush()
    yield app
    await app.stop()


async def test_each_role_is_refused_outside_its_rights(
    secured_service: TtsApp, secured_url: str, passwords: dict[str, str]
) -> None:
    assert secured_service.registry is not None
    piper = secured_service.registry.actors["piper"]

    # the translator: synthesis, status, voices; never the control subjects, the state or the KV
    seen = Violations()
    translator = await connect_as(secured_url, "translator-a", passwords["translator-a"], seen)
    try:
        client = TtsClient(translator, timeout_s=30, _ctl_timeout_s=1.0)
        audio = (await client.synthesize(SynthesisRequest(text="Allowed, and marked."))).audio
        assert wav_info(audio).frames > 0
        assert (await client.detect(audio))["watermarked"] is True  # tts.detect: a translator may check its audio
        assert (await client.status())["instance"] == "secured"
        assert "piper" in (await client.voices())["backends"]
        with pytest.raises(TtsError):  # no answer: the server dropped the request
            await client.control("piper", "unload")
        await translator.subscribe("tts.state.>")
        with pytest.raises(Exception):  # noqa: B017 - nats-py raises a timeout or a permission error here
            await translator.jetstream(timeout=1).key_value("tts_state")
        await translator.flush()
        await seen.wait_for("tts.control.piper.unload", "tts.state.>")
        assert piper.state is State.LOADED  # the unload never reached the service
    finally:
        await translator.close()

    # the monitor: state events and KV reads; no synthesis, no control, no KV writes
    seen = Violations()
    monitor = await connect_as(secured_url, "monitor", passwords["monitor"], seen)
    try:
        kv = await monitor.jetstream(timeout=2).key_value("tts_state")
        assert json.loads((await kv.get("piper")).value)["to"] == "loaded"
        try:
            watcher = await kv.watchall()
        except Exception:
            raise AssertionError(seen.errors) from None
        first = await watcher.updates(timeout=2)
        assert first is not None and first.key.startswith("piper")
        await watcher.stop()
        client = TtsClient(monitor, timeout_s=1, _ctl_timeout_s=1.0)
        with pytest.raises(TtsError):
            await client.synthesize(SynthesisRequest(text="Not for monitors."))
        with pytest.raises(TtsError):
            await client.control("piper", "retry")
        with pytest.raises(TtsError):
            await client.detect(audio)
        with pytest.raises(Exception):  # noqa: B017 - the put is refused; nats-py reports a timeout
            await kv.put("piper", b'{"to": "loaded"}')
        await monitor.flush()
        await seen.wait_for("tts.synthesize", "tts.control.piper.retry", "tts.detect", "$KV.tts_state.piper")
    finally:
        await monitor.close()

    # the operator: control subjects and detection work
    seen = Violations()
    operator = await connect_as(secured_url, "operator", passwords["operator"], seen)
    try:
        assert (await TtsClient(operator).detect(audio))["watermarked"] is True
        answer = await TtsClient(operator).control("piper", "unload")
        assert answer["ok"] is True and piper.state is State.MISSING
        with pytest.raises(TtsError):
            await TtsClient(operator, timeout_s=1).synthesize(SynthesisRequest(text="Operators do not speak."))
        await seen.wait_for("tts.synthesize")
    finally:
        await operator.close()


async def test_wrong_or_missing_credentials_are_refused_at_once(secured_url: str, passwords: dict[str, str]) -> None:
    wrong = load_settings({"NATS_URL": secured_url, "NATS_USER": "translator-a", "NATS_PASSWORD": "guess"})
    with pytest.raises(NatsUnreachable, match=r"(?i)authorization"):
        await connect(secured_url, "t", reconnect=False, deadline_s=5, auth=connect_options(wrong))
    with pytest.raises(NatsUnreachable):
        await connect(secured_url, "t", reconnect=False, deadline_s=5)


async def _speaks_with(settings: Settings, url: str) -> None:
    """The service's own connect, with the settings' credentials, reaches a server that demands them."""
    nc = await connect(url, "auth-test", reconnect=False, deadline_s=5, auth=connect_options(settings))
    try:
        await nc.flush()
        assert nc.is_connected
    finally:
        await nc.close()


async def test_token_authentication(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    for url in start_server(tmp_path, f'authorization {{ token: "{token}" }}\n'):
        await _speaks_with(load_settings({"NATS_URL": url, "NATS_TOKEN": token}), url)
        with pytest.raises(NatsUnreachable):
            await _speaks_with(load_settings({"NATS_URL": url, "NATS_TOKEN": "nope"}), url)


async def test_nkey_authentication(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    for url in start_server(tmp_path, f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n"):
        await _speaks_with(load_settings({"NATS_URL": url, "NATS_NKEY": str(seed_file)}), url)
        with pytest.raises(NatsUnreachable):
            await _speaks_with(load_settings({"NATS_URL": url}), url)


def _certificates(folder: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, **kind: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("tts test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if kind.get("ca"):
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        if kind.get("server"):
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    paths: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("tts test CA", ca_key, ca_key, ca=True)
    for who, kind in (("ca", {"ca": True}), ("server", {"server": True}), ("client", {})):
        key = ca_key if who == "ca" else ec.generate_private_key(ec.SECP256R1())
        cert = ca if who == "ca" else issue(who, key, ca_key, **kind)
        paths[f"{who}_cert"] = folder / f"{who}.pem"
        paths[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{who}_key"] = folder / f"{who}-key.pem"
        paths[f"{who}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


async def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    pem = _certificates(tmp_path)
    body = (
        f'tls {{ cert_file: "{pem["server_cert"]}", key_file: "{pem["server_key"]}", '
        f'ca_file: "{pem["ca_cert"]}", verify: true }}\n'
    )
    for url in start_server(tmp_path, body, scheme="tls"):
        full = {"NATS_URL": url, "NATS_CA": str(pem["ca_cert"])}
        await _speaks_with(
            load_settings({**full, "NATS_CERT": str(pem["client_cert"]), "NATS_KEY": str(pem["client_key"])}), url
        )
        with pytest.raises(NatsUnreachable):  # the server verifies clients: no certificate, no connection
            await _speaks_with(load_settings(full), url)


def test_creds_file_is_handed_to_nats_py(tmp_path: Path) -> None:
    """A creds file (JWT + seed) needs an operator-mode server; here: validated and passed on, not parsed."""
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n...\n------END NATS USER JWT------\n")
    assert connect_options(load_settings({"NATS_CREDS": str(creds)})) == {"user_credentials": str(creds)}


def test_ops_config_includes_the_roles_and_holds_no_secret() -> None:
    conf = (OPS / "nats.conf").read_text()
    roles = (OPS / "nats-roles.conf").read_text()
    assert "include ./nats-roles.conf" in conf
    for role in ("SERVICE", "TRANSLATOR_A", "TRANSLATOR_B", "MONITOR", "OPERATOR"):
        assert f"password: $TTS_{role}_PASSWORD" in roles
    assert 'password: "' not in roles and "token:" not in roles + conf


PATH_ATTEMPTS = [
    {"text": "Hi.", "voice": "/etc/passwd"},
    {"text": "Hi.", "voice": "../../../../etc/passwd"},
    {"text": "Hi.", "voice": ".."},
    {"text": "Hi.", "backend": "/usr/bin/python"},
    {"text": "Hi.", "model": "/tmp/evil.onnx"},
    {"text": "Hi.", "repo": "attacker/model"},
    {"text": "Hi.", "model_dir": "/"},
    {"text": "Hi.", "reference_audio": "/etc/hostname"},
    {"text": "Hi.", "options": {"model_path": "/etc/passwd"}},
]


@pytest.mark.parametrize("body", PATH_ATTEMPTS, ids=lambda b: next(k for k in b if k != "text"))
async def test_no_request_can_name_a_path_or_a_model_repository(piper_loaded: TtsApp, nc: Client, body: dict) -> None:
    """Model repositories come from configuration only; a request names at most a voice id from tts.voices."""
    msg = await nc.request("tts.synthesize", json.dumps(body).encode(), timeout=10)
    error = json.loads(msg.data)["error"]
    assert error["code"] in ("invalid_request", "unknown_voice", "unknown_backend"), error
    assert "/etc" not in error["message"] or error["code"] == "invalid_request"
    assert piper_loaded.registry is not None
    assert piper_loaded.registry.actors["piper"].adapter.models() == ()  # piper's model is the packaged voice


def test_compose_gives_the_service_its_nats_user_and_time_to_stop() -> None:
    import yaml

    services = yaml.safe_load((OPS / "docker-compose.yml").read_text())["services"]
    service = services["tts-actor"]
    assert service["environment"]["NATS_USER"] == "tts-service"
    assert service["environment"]["NATS_INBOX_PREFIX"] == "_INBOX_tts-service"  # its inbox in nats-roles.conf
    for role in roles():
        assert role.password_env in services["nats"]["environment"]
    assert "./nats-roles.conf:/etc/nats/nats-roles.conf:ro" in services["nats"]["volumes"]
    grace = float(service["environment"]["TTS_SHUTDOWN_GRACE_S"])
    stop_grace = float(service["stop_grace_period"].rstrip("s"))
    assert stop_grace > grace + 10  # the grace plus the bounded steps after it


def test_the_shipped_roles_are_what_the_generator_writes() -> None:
    """ops/nats-roles.conf is written from the subjects the code uses; a subject added there must reach it."""
    from tts_actor.wire.roles import GENERATE, render

    shipped = (OPS / "nats-roles.conf").read_text()
    assert shipped == render(), f"ops/nats-roles.conf is stale; fix: {GENERATE}"
