"""Who sent a request, as far as the service can know it: for the audit trail, never for access control.

On a secured server each NATS user may subscribe only its own inbox prefix (``_INBOX_<user>``), so the
reply subject names the user who reads the answer. The HTTP edge adds the id of the API key it
checked (``Tts-Key-Id``, never the key); another client could claim one too, so it is recorded
beside the NATS user that carried it, not instead of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tts_actor.wire.headers import Header
from tts_actor.wire.subjects import inbox_user

_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def caller_of(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """``nats:<user>``, ``http:<key id> via nats:<user>``, or ``nats:?`` when the default inbox hides the user."""
    nats = f"nats:{inbox_user(reply) or '?'}"
    key_id = (headers or {}).get(Header.KEY_ID.value)
    if key_id and _KEY_ID_RE.match(key_id):
        return f"http:{key_id} via {nats}"
    return nats
