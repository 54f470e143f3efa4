"""Who sent a request: the NATS user its reply inbox names, and the HTTP key the edge vouches for.

On a secured server each user may subscribe only its own inbox prefix (``_INBOX_<user>``), so a reply
reaches only the user that the reply subject names: whatever a caller claims there, it can read only its
own answers. ``Tts-Caller`` narrows the identity below that user (the HTTP edge sends ``http:<key id>``);
it can never reach another NATS user's records, since the inbox part comes first. Pure: no I/O.

A request from another NATS account (ops/nats-accounts.conf) arrives through a service import: the server
rewrites its reply to ``_R_.<...>``, the same for every account, so the inbox names nobody. There the server's
``Nats-Request-Info`` header names the requester (``acc``, and ``user`` when the import has ``share: true``):
the identity is ``acct:<account>[/<user>]``. That header is trusted only beside an ``_R_.`` reply: nats-server
refuses any client's publish with such a reply, and on a service import it replaces whatever header the
requester sent with its own (both checked by tests/integration/test_accounts_consents.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from tts_actor.errors import TtsError, invalid
from tts_actor.wire.subjects import DEFAULT_INBOX

CALLER_HEADER = "Tts-Caller"
REQUEST_INFO_HEADER = "Nats-Request-Info"  # set by nats-server on a request through a service import
IMPORT_REPLY = "_R_"  # the first token of a reply nats-server rewrote for a service import
_CALLER_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_MAX_NAME = 128  # an account or user name in Nats-Request-Info (a JWT account's public key is 56)
ANONYMOUS = "anonymous"
UNIDENTIFIED = "caller_unidentified"  # the ``reason`` of the refusal below
IMPORT_FIX = (
    "Import the tts subjects into your account with 'share: true' (ops/nats-accounts.conf) on nats-server 2.10 or "
    "later, so that the server names the requesting account in 'Nats-Request-Info'."
)


def inbox_user(reply: str | None) -> str:
    """``_INBOX_translator-a.<nuid>`` -> ``translator-a``; the shared ``_INBOX`` (an open server) is anonymous."""
    first = (reply or "").split(".", 1)[0]
    if not first or first == DEFAULT_INBOX:
        return ANONYMOUS
    return first.removeprefix(f"{DEFAULT_INBOX}_") or ANONYMOUS


def requester(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """The NATS identity: ``acct:<account>[/<user>]`` through a service import, else the inbox's user."""
    if (reply or "").split(".", 1)[0] != IMPORT_REPLY:
        return inbox_user(reply)
    raw = (headers or {}).get(REQUEST_INFO_HEADER)
    if not (reply or "").startswith(f"{IMPORT_REPLY}.") or raw is None:
        raise unidentified(
            f"a request through a service import (reply '{IMPORT_REPLY}.') without '{REQUEST_INFO_HEADER}'"
        )
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    account = info.get("acc") if isinstance(info, dict) else None
    user = info.get("user") if isinstance(info, dict) else None
    if not _name(account) or (user is not None and not _name(user)):
        raise unidentified(f"'{REQUEST_INFO_HEADER}' names no account")
    return f"acct:{account}/{user}" if user else f"acct:{account}"


def caller_identity(reply: str | None, headers: Mapping[str, str] | None) -> str:
    """``<user>`` or ``<user>/<Tts-Caller>``: whose records a request may see; a malformed header is refused."""
    user = requester(reply, headers)
    below = (headers or {}).get(CALLER_HEADER)
    if below is None:
        return user
    if not _CALLER_RE.match(below):
        raise invalid(f"'{CALLER_HEADER}' must be 1-64 letters, digits or _.:@-")
    return f"{user}/{below}"


def unidentified(message: str) -> TtsError:
    """Owner-scoped records need a caller the server names; sharing one identity among accounts would leak them."""
    error = invalid(f"cannot tell which account sent this: {message}", IMPORT_FIX)
    error.reason = UNIDENTIFIED
    return error


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME and "/" not in value
