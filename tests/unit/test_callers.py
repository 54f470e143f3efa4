"""Who sent a request, as the audit trail records it: the NATS user from the reply inbox, an HTTP key id beside it."""

from __future__ import annotations

from tts_actor.nats_edge.callers import caller_of
from tts_actor.wire.subjects import inbox_user, tenant_inbox


def test_the_user_comes_from_its_own_inbox_prefix() -> None:
    assert inbox_user(f"{tenant_inbox('translator-a')}.abc.1") == "translator-a"
    assert inbox_user("_INBOX.abc.1") is None and inbox_user(None) is None and inbox_user("_INBOX_.x") is None
    assert caller_of("_INBOX_translator-b.x.2", None) == "nats:translator-b"
    assert caller_of("_INBOX.x.2", {}) == "nats:?"


def test_an_http_key_id_is_recorded_beside_the_nats_user_that_carried_it() -> None:
    assert caller_of("_INBOX_tts-http.x", {"Tts-Key-Id": "key_3f2a"}) == "http:key_3f2a via nats:tts-http"
    # anything that is not a plain short id is ignored, not copied into the trail
    assert caller_of("_INBOX_tts-http.x", {"Tts-Key-Id": "sk-" + "x" * 80}) == "nats:tts-http"
    assert caller_of("_INBOX_tts-http.x", {"Tts-Key-Id": "a b\nforged"}) == "nats:tts-http"
