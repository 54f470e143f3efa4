"""Who may do what on the NATS server, written from :mod:`tts_actor.wire.subjects` into ``ops/nats-roles.conf``.

Each user subscribes only its own inbox prefix (``_INBOX_<user>.>``, its NATS_INBOX_PREFIX), so no tenant
reads another's replies. The service publishes replies through ``allow_responses`` (to the reply subject of a
request it received, for a while), never on ``_INBOX.>``. Regenerate the shipped file with
``python -m tts_actor.wire.roles > ops/nats-roles.conf``; a test fails when the two differ.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tts_actor.wire.subjects import Subjects, inbox_subscription, tenant_inbox

SERVICE_USER = "tts-service"
TENANTS = ("translator-a", "translator-b")  # one NATS user per translator tenant
# a stream's replies: the ack, a heartbeat a second, several messages per segment; within a long synthesis
RESPONSE_MAX_MSGS = 100_000
RESPONSE_EXPIRES = "30m"
GENERATE = "python -m tts_actor.wire.roles > ops/nats-roles.conf"


@dataclass(frozen=True)
class Role:
    """One permissions block and the user that holds it."""

    var: str
    user: str
    why: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = False

    @property
    def password_env(self) -> str:
        return "TTS_" + self.user.removeprefix("tts-").replace("-", "_").upper() + "_PASSWORD"


def roles(s: Subjects | None = None, tenants: tuple[str, ...] = TENANTS) -> tuple[Role, ...]:
    """The service, one translator per tenant, the monitor and the operator."""
    s = s or Subjects()
    endpoints = tuple(subject for _, subject in s.endpoints())
    tenant_endpoints = tuple(subject for _, subject in s.tenant_endpoints())
    operator_endpoints = tuple(subject for _, subject in s.operator_endpoints())
    service = Role(
        "SERVICE",
        SERVICE_USER,
        "the tts-actor instances: serve the endpoints, forward between instances, publish state, keep the stores, "
        "tell the fleet of erasures, write the audit trail",
        publish=(
            s.state(),
            s.backend_synthesize(),
            s.kv(),
            s.claims(),
            *s.object_stores(),
            s.audio_refs(),
            s.erasure,
            s.audit(),
            "$JS.API.>",
            # flow-control replies of the ordered consumers it reads: the erasures, the audio cache's index
            f"$JS.FC.{s.erasure_stream}.>",
            f"$JS.FC.KV_{s.audio_refs_bucket}.>",
        ),
        subscribe=(
            *endpoints,
            s.cancel,
            s.control(),
            s.backend_synthesize(),
            "$SRV.>",
            *s.audio_cache_gone(),
            inbox_subscription(tenant_inbox(SERVICE_USER)),
        ),
        responses=True,
    )
    translators = tuple(
        Role(
            tenant.replace("-", "_").upper(),
            tenant,
            f"translator tenant {tenant}: synthesis, voices, its own consents and voice profiles, watermark detection,"
            " cancel; the replies on its own inbox only",
            publish=(*tenant_endpoints, s.cancel),
            subscribe=(inbox_subscription(tenant_inbox(tenant)),),
        )
        for tenant in tenants
    )
    # the state bucket and the audit stream, read (`tts-actor watch`, `tts-actor audit`); $JS.API.INFO once
    audit_readers_api = tuple(dict.fromkeys((*s.kv_read_api(), *s.stream_read_api(s.audit_stream))))
    monitor = Role(
        "MONITOR",
        "monitor",
        "monitoring (`tts-actor watch`, dashboards): live state events, reads of the state bucket and of the audit "
        "trail, no writes",
        publish=(*audit_readers_api, s.health),
        subscribe=(s.state(), s.audit(), inbox_subscription(tenant_inbox("monitor"))),
    )
    operator = Role(
        "OPERATOR",
        "operator",
        "operators: the control subjects (retry, unload), every caller's consents (list, delete), watermark"
        " detection, $SRV discovery and stats, and everything a monitor reads (the audit trail included)",
        publish=(
            s.subject("control", ">"),
            s.status,
            s.voices,
            s.health,
            s.detect,
            *operator_endpoints,
            "$SRV.>",
            *audit_readers_api,
        ),
        subscribe=(s.state(), s.audit(), inbox_subscription(tenant_inbox("operator"))),
    )
    return (service, *translators, monitor, operator)


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render(all_roles: tuple[Role, ...] | None = None) -> str:
    """The text of ``ops/nats-roles.conf``."""
    all_roles = all_roles or roles()
    envs = ", ".join(role.password_env for role in all_roles)
    lines = [
        "# GENERATED from tts_actor/wire/subjects.py and roles.py: edit those, then run",
        f"#   {GENERATE}",
        "# Who may do what on the tts-actor NATS server. Included by nats.conf (and by the tests that prove it,",
        "# tests/integration/test_security.py and test_security_flows.py, against a real nats-server).",
        "# Passwords come from the server's environment: nothing secret is in this file. Set",
        f"# {envs}",
        "# where nats-server runs (e.g. `openssl rand -hex 24` each).",
        "# Every user subscribes only its own inbox prefix: connect it with NATS_INBOX_PREFIX=_INBOX_<user>.",
        "# The service answers through allow_responses (the reply subject of a request it received), so no",
        "# user may publish on another's inbox. A client outside its rights gets 'Permissions Violation'.",
        "",
        "authorization {",
    ]
    for role in all_roles:
        lines += [
            f"  # {role.why}",
            f"  {role.var} = {{",
            f"    publish = {_list(role.publish)}",
            f"    subscribe = {_list(role.subscribe)}",
        ]
        if role.responses:
            lines.append(f'    allow_responses = {{max: {RESPONSE_MAX_MSGS}, expires: "{RESPONSE_EXPIRES}"}}')
        lines.append("  }")
    lines.append("  users = [")
    for role in all_roles:
        lines.append(f"    {{user: {role.user}, password: ${role.password_env}, permissions: ${role.var}}}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
