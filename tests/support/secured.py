"""A real nats-server running the shipped ops/nats-roles.conf, and clients connected as its users.

Passwords are random per test and given to the server through its environment, as in production.
Each user connects with its own inbox prefix (``_INBOX_<user>``), the only inbox the roles let it read.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import nats
from nats.aio.client import Client

from tests.support.helpers import eventually
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.roles import roles
from tts_actor.wire.subjects import tenant_inbox

OPS = Path(__file__).resolve().parents[2] / "ops"


def role_passwords() -> dict[str, str]:
    """A random password per user of the shipped roles."""
    return {role.user: secrets.token_hex(12) for role in roles()}


def secured_server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[EmbeddedNatsServer]:
    """nats-server with JetStream and the repository's role file, exactly as ops/nats.conf includes it."""
    shutil.copy(OPS / "nats-roles.conf", tmp_path / "nats-roles.conf")
    conf = tmp_path / "server.conf"
    conf.write_text("include ./nats-roles.conf\n")
    env = {role.password_env: passwords[role.user] for role in roles()}
    server = EmbeddedNatsServer(tmp_path / "js", port=-1, config=conf, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_violations(server: EmbeddedNatsServer) -> list[str]:
    """The server's own log lines about refused publishes and subscriptions."""
    return [line for line in server.log_lines if "violation" in line.lower()]


class Violations:
    """The server's asynchronous -ERR lines for one connection."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def about(self, subject: str) -> bool:
        return any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors)

    async def wait_for(self, *subjects: str, timeout_s: float = 5.0) -> None:
        """Until the server has refused each subject: its -ERR may arrive after a flush's PONG (seen in CI)."""
        await eventually(lambda: all(self.about(s) for s in subjects), timeout_s, explain=lambda: self.errors)


async def connect_as(url: str, user: str, password: str, violations: Violations) -> Client:
    """A plain nats-py connection as ``user``, with that user's inbox prefix."""
    return await nats.connect(
        url,
        user=user,
        password=password,
        inbox_prefix=tenant_inbox(user),
        error_cb=violations.record,
        allow_reconnect=False,
        connect_timeout=2,
    )
