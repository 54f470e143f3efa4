"""Who sent a request, for the audit trail: the identity the consent records use, never an error.

:func:`tts_actor.wire.caller.caller_identity` names the caller (the NATS user its reply inbox belongs to,
``/<Tts-Caller>`` below it: the HTTP edge's ``http:<key id>``) and refuses a malformed ``Tts-Caller``;
an audit event must still be written for such a request, so here that header is only marked as bad.
"""

from __future__ import annotations

from collections.abc import Mapping

from tts_actor.errors import TtsError
from tts_actor.wire.caller import caller_identity, inbox_user


def audit_actor(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """``<user>``, ``<user>/<Tts-Caller>``, ``<user>/?`` for a malformed header; ``anonymous`` on ``_INBOX``."""
    try:
        return caller_identity(reply, headers)
    except TtsError:
        return f"{inbox_user(reply)}/?"
