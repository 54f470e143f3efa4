"""Who sent a request: the NATS user its reply inbox names, and the HTTP key the edge vouches for.

On a secured server each user may subscribe only its own inbox prefix (``_INBOX_<user>``), so a reply
reaches only the user that the reply subject names: whatever a caller claims there, it can read only its
own answers. ``Tts-Caller`` narrows the identity below that user (the HTTP edge sends ``http:<key id>``);
it can never reach another NATS user's records, since the inbox part comes first. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tts_actor.errors import invalid
from tts_actor.wire.subjects import DEFAULT_INBOX

CALLER_HEADER = "Tts-Caller"
_CALLER_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
ANONYMOUS = "anonymous"


def inbox_user(reply: str | None) -> str:
    """``_INBOX_translator-a.<nuid>`` -> ``translator-a``; the shared ``_INBOX`` (an open server) is anonymous."""
    first = (reply or "").split(".", 1)[0]
    if not first or first == DEFAULT_INBOX:
        return ANONYMOUS
    return first.removeprefix(f"{DEFAULT_INBOX}_") or ANONYMOUS


def caller_identity(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """``<user>`` or ``<user>/<Tts-Caller>``: whose records a request may see; a malformed header is refused."""
    user = inbox_user(reply)
    below = (headers or {}).get(CALLER_HEADER)
    if below is None:
        return user
    if not _CALLER_RE.match(below):
        raise invalid(f"'{CALLER_HEADER}' must be 1-64 letters, digits or _.:@-")
    return f"{user}/{below}"
