"""The state KV's one codec: keys from (backend, instance) and back, entries to and from :class:`StateEvent`.

The bucket holds two kinds of entry per backend: ``<backend>`` (the latest event of any instance, a copy)
and ``<backend>.<instance>`` (one instance's own current event). A KV key may only hold ``[-/_=.a-zA-Z0-9]``
and a dot splits it into tokens, so an instance name is encoded: every byte of its UTF-8 outside
``[-/_a-zA-Z0-9]`` becomes ``=XX`` (upper-case hex). The mapping is injective (``=`` itself is escaped), so
``tts:1``, ``tts_1`` and ``eu west`` get distinct keys and every key parses back to the name it was made from.
Names made only of safe characters (``kv-0``, ``a``) keep their key unchanged. Nothing else builds or splits keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from statemachine import StateEvent

_SAFE = frozenset(b"-/_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_BACKEND_RE = re.compile(r"^[-_a-zA-Z0-9]+$")
_ENCODED_RE = re.compile(r"^(?:[-/_a-zA-Z0-9]|=[0-9A-F]{2})+$")
ESCAPE = "="


@dataclass(frozen=True, order=True)
class StateKey:
    """A parsed key: ``instance`` is None for the shared ``<backend>`` entry (the latest of any instance)."""

    backend: str
    instance: str | None = None

    @property
    def shared(self) -> bool:
        return self.instance is None

    def __str__(self) -> str:
        return shared_key(self.backend) if self.instance is None else instance_key(self.backend, self.instance)


def encode_instance(instance: str) -> str:
    """The key token for an instance name (see the module doc); raises ValueError for an empty name."""
    if not instance:
        raise ValueError("an instance name cannot be empty")
    return "".join(chr(b) if b in _SAFE else f"{ESCAPE}{b:02X}" for b in instance.encode("utf-8"))


def decode_instance(token: str) -> str | None:
    """The instance name a key token was made from; None for a token no instance name encodes to."""
    if not _ENCODED_RE.match(token):
        return None
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == ESCAPE:
            byte = int(token[i + 1 : i + 3], 16)
            if byte in _SAFE:  # a safe byte is never escaped: this token was not made here
                return None
            raw.append(byte)
            i += 3
        else:
            raw.append(ord(token[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def shared_key(backend: str) -> str:
    """``<backend>``: the latest event of any instance."""
    _check_backend(backend)
    return backend


def instance_key(backend: str, instance: str) -> str:
    """``<backend>.<encoded instance>``: one instance's own entry."""
    return f"{shared_key(backend)}.{encode_instance(instance)}"


def parse_key(key: str) -> StateKey | None:
    """The (backend, instance) a key names; None for a key this codec does not make."""
    backend, dot, token = key.partition(".")
    if not _BACKEND_RE.match(backend):
        return None
    if not dot:
        return StateKey(backend)
    instance = decode_instance(token)
    return None if instance is None else StateKey(backend, instance)


def instance_entry_of(key: str, backend: str) -> bool:
    """``key`` is some instance's own entry for ``backend``."""
    parsed = parse_key(key)
    return parsed is not None and parsed.backend == backend and parsed.instance is not None


def encode_event(event: StateEvent) -> bytes:
    """An entry's payload: the event as JSON (the same bytes as on ``tts.state.<backend>``)."""
    return json.dumps(event.to_dict()).encode()


def decode_event(value: bytes | None) -> StateEvent | None:
    """The event an entry holds; None for an empty (deleted) or unreadable payload."""
    if not value:
        return None
    try:
        return StateEvent.from_dict(json.loads(value))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_backend(backend: str) -> None:
    if not _BACKEND_RE.match(backend):
        raise ValueError(f"backend name {backend!r} cannot be a state KV key token")
