"""Who a request through a service import is: the account nats-server names, or a refusal, never a shared ``_R_``."""

from __future__ import annotations

import json

import pytest

from tts_actor.errors import ErrorCode, TtsError
from tts_actor.nats_edge.callers import audit_actor
from tts_actor.wire.caller import REQUEST_INFO_HEADER, UNIDENTIFIED, caller_identity, requester

IMPORTED = "_R_.HTEDNJ.qf91hN"  # a reply as nats-server rewrites it for a service import


def info(**fields: object) -> dict[str, str]:
    return {REQUEST_INFO_HEADER: json.dumps({"start": "2026-12-01T11:29:36Z", "rtt": 400554, **fields})}


def test_the_server_named_account_and_user_are_the_caller() -> None:
    assert requester(IMPORTED, info(acc="ORG_A", user="org-a")) == "acct:ORG_A/org-a"
    assert requester(IMPORTED, info(acc="ORG_B", user="org-b")) != requester(IMPORTED, info(acc="ORG_A", user="org-b"))
    assert requester(IMPORTED, info(acc="ORG_A")) == "acct:ORG_A"  # an import without share: true names no user
    both = {**info(acc="ORG_A", user="edge"), "Tts-Caller": "http:key_ab"}
    assert caller_identity(IMPORTED, both) == "acct:ORG_A/edge/http:key_ab"


@pytest.mark.parametrize(
    ("reply", "headers"),
    [
        (IMPORTED, None),
        (IMPORTED, {REQUEST_INFO_HEADER: "not json"}),
        (IMPORTED, {REQUEST_INFO_HEADER: "[1]"}),
        (IMPORTED, info(user="org-a")),
        (IMPORTED, info(acc="")),
        (IMPORTED, info(acc="A" * 129)),
        (IMPORTED, info(acc="ORG_A/org-b")),
        (IMPORTED, info(acc="ORG_A", user=7)),
        ("_R_", info(acc="ORG_A")),  # a client may send this reply itself; the server refuses only "_R_."
    ],
)
def test_an_import_reply_the_server_named_nobody_for_is_refused(reply: str, headers: dict[str, str] | None) -> None:
    with pytest.raises(TtsError) as refused:
        caller_identity(reply, headers)
    assert refused.value.code is ErrorCode.INVALID_REQUEST and refused.value.reason == UNIDENTIFIED
    assert "share: true" in refused.value.fix


def test_the_header_counts_only_beside_an_import_reply() -> None:
    """Inside one account a client may send any header, but its reply inbox still names it."""
    assert requester("_INBOX_translator-b.x", info(acc="ORG_A", user="org-a")) == "translator-b"
    assert requester("_INBOX.x", info(acc="ORG_A")) == "anonymous"


def test_the_audit_trail_names_an_import_caller_and_never_fails() -> None:
    assert audit_actor(IMPORTED, info(acc="ORG_A", user="org-a")) == "acct:ORG_A/org-a"
    assert audit_actor(IMPORTED, {**info(acc="ORG_A"), "Tts-Caller": "a/b"}) == "acct:ORG_A/?"
    assert audit_actor(IMPORTED, None) == "_R_/?"
