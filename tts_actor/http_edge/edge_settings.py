"""The HTTP edge's own settings (``TTS_HTTP_*``), its listen address, and who may reach it.

Apart from :mod:`tts_actor.http_edge.openai_compat` (the API mapping), so that the limits the
server enforces (body size, header and body timeouts, open connections) are read in one place.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
ROUTED = "auto"  # an alias target meaning "no backend named: the service routes"
DEFAULT_VOICE = "default"  # an alias target meaning "the backend's default voice for the language"


class EdgeConfigError(ValueError):
    """An HTTP edge setting the edge cannot start with; the message says the fix."""


@dataclass(frozen=True)
class EdgeSettings:
    """The HTTP edge's own settings (``TTS_HTTP_*``); the service's are in :mod:`tts_actor.config`."""

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 64 * 1024
    # OpenAI model name -> backend, or ROUTED
    model_aliases: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(OPENAI_MODELS, ROUTED))
    # OpenAI voice name -> service voice id, or DEFAULT_VOICE
    voice_aliases: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(OPENAI_VOICES, DEFAULT_VOICE))
    default_language: str = "en"
    wait_ms: int = 0  # how long a request waits for a backend still loading before it is answered 503
    # slow callers (tts_actor/http_edge/guard.py): a request's headers, then its body, must arrive within these
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 256  # open connections; the next one is answered 503 and closed at once

    def with_(self, **changes: object) -> EdgeSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _pairs(name: str, raw: str) -> dict[str, str]:
    """``a=b,c=d`` -> {"a": "b", "c": "d"}."""
    result: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise EdgeConfigError(f"{name} entry {part!r}: expected name=target, e.g. tts-1=piper")
        result[key.strip()] = value.strip()
    return result


def load_edge_settings(env: Mapping[str, str] | None = None) -> EdgeSettings:
    """Build :class:`EdgeSettings` from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    defaults = EdgeSettings()
    keys = tuple(k.strip() for k in env.get("TTS_HTTP_API_KEYS", "").split(",") if k.strip())
    try:
        max_body = int(env.get("TTS_HTTP_MAX_BODY_BYTES") or defaults.max_body_bytes)
        wait_ms = int(env.get("TTS_HTTP_WAIT_MS") or 0)
        max_connections = int(env.get("TTS_HTTP_MAX_CONNECTIONS") or defaults.max_connections)
    except ValueError as exc:
        raise EdgeConfigError(
            f"TTS_HTTP_MAX_BODY_BYTES / TTS_HTTP_WAIT_MS / TTS_HTTP_MAX_CONNECTIONS must be integers ({exc})"
        ) from None
    if max_body < 1024 or wait_ms < 0 or max_connections < 1:
        raise EdgeConfigError(
            "TTS_HTTP_MAX_BODY_BYTES must be at least 1024, TTS_HTTP_WAIT_MS not negative, "
            "TTS_HTTP_MAX_CONNECTIONS at least 1"
        )
    models = {**defaults.model_aliases, **_pairs("TTS_HTTP_MODEL_ALIASES", env.get("TTS_HTTP_MODEL_ALIASES", ""))}
    voices = dict(defaults.voice_aliases)
    if "TTS_HTTP_VOICE_ALIASES" in env:  # set, even empty: exactly the aliases listed
        voices = _pairs("TTS_HTTP_VOICE_ALIASES", env["TTS_HTTP_VOICE_ALIASES"])
    return EdgeSettings(
        api_keys=keys,
        max_body_bytes=max_body,
        model_aliases=models,
        voice_aliases=voices,
        default_language=env.get("TTS_HTTP_DEFAULT_LANGUAGE", "en").strip().lower() or "en",
        wait_ms=wait_ms,
        header_timeout_s=_seconds(env, "TTS_HTTP_HEADER_TIMEOUT_S", defaults.header_timeout_s),
        body_timeout_s=_seconds(env, "TTS_HTTP_BODY_TIMEOUT_S", defaults.body_timeout_s),
        max_connections=max_connections,
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EdgeConfigError(f"{name}={raw[:20]!r}: expected a number of seconds, e.g. 10") from None
    if not 0 < value <= 3600:
        raise EdgeConfigError(f"{name}={raw[:20]!r}: must be above 0 and at most 3600 seconds")
    return value


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) -> (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise EdgeConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, settings: EdgeSettings) -> None:
    """Refuse to serve without keys anywhere but loopback: the edge spends real compute."""
    if not settings.api_keys and not is_loopback(host):
        raise EdgeConfigError(
            f"refusing to listen on {host} without API keys: set TTS_HTTP_API_KEYS=key1,key2 "
            "(clients send 'Authorization: Bearer <key>'), or listen on 127.0.0.1"
        )
