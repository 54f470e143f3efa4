"""Who sent a request, as the audit trail records it: the consent records' caller identity, never an error."""

from __future__ import annotations

from tts_actor.nats_edge.callers import audit_actor
from tts_actor.wire.subjects import tenant_inbox


def test_the_user_comes_from_its_own_inbox_prefix_and_the_edge_narrows_it() -> None:
    assert audit_actor(f"{tenant_inbox('translator-a')}.abc.1", None) == "translator-a"
    assert audit_actor("_INBOX.abc.1", {}) == "anonymous"
    assert audit_actor("_INBOX_tts-http.x", {"Tts-Caller": "http:key_3f2a"}) == "tts-http/http:key_3f2a"


def test_a_malformed_caller_header_is_marked_not_copied_and_not_refused() -> None:
    assert audit_actor("_INBOX_tts-http.x", {"Tts-Caller": "a b\nforged"}) == "tts-http/?"
    assert audit_actor("_INBOX_tts-http.x", {"Tts-Caller": "x" * 80}) == "tts-http/?"
