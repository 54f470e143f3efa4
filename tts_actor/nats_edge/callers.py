"""Who sent a request, for the audit trail: the identity the consent records use, never an error.

:func:`tts_actor.wire.caller.caller_identity` names the caller (the NATS user its reply inbox belongs to, or the
account a service import came from; ``/<Tts-Caller>`` below it: the HTTP edge's ``http:<key id>``) and refuses a
malformed ``Tts-Caller``;
an audit event must still be written for such a request, so here that header is only marked as bad.
"""

from __future__ import annotations

from collections.abc import Mapping

from tts_actor.errors import TtsError
from tts_actor.wire.caller import IMPORT_REPLY, caller_identity, requester


def audit_actor(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """``<user>``, ``<user>/<Tts-Caller>``, ``<user>/?`` for a malformed header; ``anonymous`` on ``_INBOX``.

    Through a service import ``<user>`` is ``acct:<account>[/<user>]``; ``_R_/?`` when the server named none.
    """
    try:
        return caller_identity(reply, headers)
    except TtsError:
        pass
    try:
        return f"{requester(reply, headers)}/?"
    except TtsError:  # through a service import the server named no account
        return f"{IMPORT_REPLY}/?"
