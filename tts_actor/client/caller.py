"""The caller a client acts for, carried on its NATS requests for the service's audit trail.

The HTTP edge is one NATS client for many API keys: it sets :data:`KEY_ID` for each HTTP request it
serves (a context variable, so concurrent requests do not mix), and every request the client sends
meanwhile carries ``Tts-Key-Id``. The id names a key without revealing it (:func:`key_id`).
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

from tts_actor.observability.tracing import inject_headers
from tts_actor.wire.headers import Header

KEY_ID: ContextVar[str | None] = ContextVar("tts_key_id", default=None)


def key_id(api_key: str | bytes) -> str:
    """``key_<12 hex>``: a stable name for an API key in logs and the audit trail; the key cannot be read back."""
    raw = api_key.encode() if isinstance(api_key, str) else api_key
    return "key_" + hashlib.sha256(raw).hexdigest()[:12]


def request_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """An outgoing request's headers: the trace context, and the caller's key id when one is set."""
    carrier = inject_headers(headers)
    if (current := KEY_ID.get()) is not None:
        carrier[Header.KEY_ID.value] = current
    return carrier
