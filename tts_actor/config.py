"""Settings from environment variables, with documented defaults.

Read once at start-up into a frozen dataclass so that every other module takes
explicit values and the tests can build one without touching the environment.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_BACKENDS = ("piper", "chatterbox", "mms", "xtts", "higgs")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_HF_ENDPOINT = "https://huggingface.co"


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts-actor"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Field docs are the README's table."""

    nats_url: str | None = None
    embedded_nats_port: int = 4222
    nats_connect_timeout_s: float = 10.0
    subject_prefix: str = "tts"
    kv_bucket: str = "tts_state"
    queue_group: str = "tts"
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    # language -> backends in priority order; empty means the global order
    language_priority: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    startup_timeout_s: float = 30.0
    download_connect_timeout_s: float = 3.0
    download_read_timeout_s: float = 10.0
    download_stall_timeout_s: float = 30.0
    download_total_timeout_s: float = 1800.0
    retry_backoff_initial_s: float = 5.0
    retry_backoff_max_s: float = 300.0
    retry_max_attempts: int = 5
    allow_download: bool = True
    max_text_chars: int = 5000
    max_request_bytes: int = 4 * 1024 * 1024
    max_wait_ms: int = 30_000
    max_inflight: int = 16
    backend_queue_depth: int = 8
    synthesis_timeout_s: float = 120.0
    shutdown_grace_s: float = 10.0
    idle_unload_s: float = 0.0
    segment_silence_ms: int = 150  # silence between two segments of one reply
    cache_dir: Path = field(default_factory=_default_cache_dir)
    piper_voices_dir: Path | None = None
    log_level: str = "info"
    log_format: str = "console"
    metrics_port: int = 0
    instance: str = field(default_factory=_default_instance)
    repo_overrides: Mapping[str, str] = field(default_factory=dict)
    # per backend, from TTS_<BACKEND>_LANGUAGES: the subset of its languages to offer
    language_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # per backend, from TTS_<BACKEND>_MODEL_DIR: model files already on disk, no download
    local_model_dirs: Mapping[str, Path] = field(default_factory=dict)
    # the hub to download models from (TTS_HF_ENDPOINT, else HF_ENDPOINT); tests point it at a local fake
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    # HF_TOKEN, for gated repositories; kept out of repr so it never reaches a log line
    hf_token: str | None = field(default=None, repr=False)

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def subject(self, *parts: str) -> str:
        return ".".join((self.subject_prefix, *parts))

    def priority_for(self, language: str) -> tuple[str, ...]:
        """Backends to try for ``language``, best first: the language's own list, then the rest in order."""
        listed = tuple(b for b in self.language_priority.get(language, ()) if b in self.backends)
        return listed + tuple(b for b in self.backends if b not in listed)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: expected a {kind.__name__}") from exc
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def _language_priority(raw: str) -> dict[str, tuple[str, ...]]:
    """``en=piper,xtts;de=xtts,mms`` -> {"en": ("piper","xtts"), ...}."""
    result: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        if "=" not in part:
            raise ConfigError(f"TTS_LANGUAGE_PRIORITY entry {part!r}: expected lang=backend,backend")
        lang, backends = part.split("=", 1)
        result[lang.strip().lower()] = tuple(b.strip() for b in backends.split(",") if b.strip())
    return result


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default ``os.environ``)."""
    env = os.environ if env is None else env
    backends = tuple(b.strip() for b in env.get("TTS_BACKENDS", ",".join(DEFAULT_BACKENDS)).split(",") if b.strip())
    unknown = [b for b in backends if b not in DEFAULT_BACKENDS]
    if unknown:
        raise ConfigError(f"TTS_BACKENDS names unknown backends {unknown}; known: {', '.join(DEFAULT_BACKENDS)}")
    offline = _bool(env, "HF_HUB_OFFLINE", False)
    repo_overrides = {
        name: env[f"TTS_{name.upper()}_REPO"] for name in DEFAULT_BACKENDS if env.get(f"TTS_{name.upper()}_REPO")
    }
    language_overrides = {
        name: tuple(lang.strip().lower() for lang in env[f"TTS_{name.upper()}_LANGUAGES"].split(",") if lang.strip())
        for name in DEFAULT_BACKENDS
        if env.get(f"TTS_{name.upper()}_LANGUAGES")
    }
    local_model_dirs = {
        name: Path(env[f"TTS_{name.upper()}_MODEL_DIR"]).expanduser()
        for name in DEFAULT_BACKENDS
        if env.get(f"TTS_{name.upper()}_MODEL_DIR")
    }
    kwargs: dict[str, object] = dict(
        nats_url=env.get("NATS_URL") or None,
        embedded_nats_port=int(_number(env, "TTS_EMBEDDED_NATS_PORT", 4222, int)),
        nats_connect_timeout_s=_number(env, "TTS_NATS_CONNECT_TIMEOUT_S", 10.0),
        subject_prefix=env.get("TTS_SUBJECT_PREFIX", "tts"),
        kv_bucket=env.get("TTS_KV_BUCKET", "tts_state"),
        queue_group=env.get("TTS_QUEUE_GROUP", "tts"),
        backends=backends,
        language_priority=_language_priority(env.get("TTS_LANGUAGE_PRIORITY", "")),
        startup_timeout_s=_number(env, "TTS_STARTUP_TIMEOUT_S", 30.0),
        download_connect_timeout_s=_number(env, "TTS_DOWNLOAD_CONNECT_TIMEOUT_S", 3.0),
        download_read_timeout_s=_number(env, "TTS_DOWNLOAD_READ_TIMEOUT_S", 10.0),
        download_stall_timeout_s=_number(env, "TTS_DOWNLOAD_STALL_TIMEOUT_S", 30.0),
        download_total_timeout_s=_number(env, "TTS_DOWNLOAD_TOTAL_TIMEOUT_S", 1800.0),
        retry_backoff_initial_s=_number(env, "TTS_RETRY_BACKOFF_INITIAL_S", 5.0),
        retry_backoff_max_s=_number(env, "TTS_RETRY_BACKOFF_MAX_S", 300.0),
        retry_max_attempts=int(_number(env, "TTS_RETRY_MAX_ATTEMPTS", 5, int)),
        allow_download=_bool(env, "TTS_ALLOW_DOWNLOAD", True) and not offline,
        max_text_chars=int(_number(env, "TTS_MAX_TEXT_CHARS", 5000, int, 1)),
        max_request_bytes=int(_number(env, "TTS_MAX_REQUEST_BYTES", 4 * 1024 * 1024, int, 1024)),
        max_wait_ms=int(_number(env, "TTS_MAX_WAIT_MS", 30_000, int)),
        max_inflight=int(_number(env, "TTS_MAX_INFLIGHT", 16, int, 1)),
        backend_queue_depth=int(_number(env, "TTS_BACKEND_QUEUE_DEPTH", 8, int, 1)),
        synthesis_timeout_s=_number(env, "TTS_SYNTHESIS_TIMEOUT_S", 120.0),
        shutdown_grace_s=_number(env, "TTS_SHUTDOWN_GRACE_S", 10.0),
        idle_unload_s=_number(env, "TTS_IDLE_UNLOAD_S", 0.0),
        segment_silence_ms=int(_number(env, "TTS_SEGMENT_SILENCE_MS", 150, int)),
        log_level=env.get("TTS_LOG_LEVEL", "info").lower(),
        log_format=env.get("TTS_LOG_FORMAT", "console").lower(),
        metrics_port=int(_number(env, "TTS_METRICS_PORT", 0, int)),
        repo_overrides=repo_overrides,
        language_overrides=language_overrides,
        local_model_dirs=local_model_dirs,
        hf_endpoint=(env.get("TTS_HF_ENDPOINT") or env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
        hf_token=env.get("HF_TOKEN") or None,
    )
    if env.get("TTS_CACHE_DIR"):
        kwargs["cache_dir"] = Path(env["TTS_CACHE_DIR"]).expanduser()
    if env.get("TTS_PIPER_VOICES_DIR"):
        kwargs["piper_voices_dir"] = Path(env["TTS_PIPER_VOICES_DIR"]).expanduser()
    if env.get("TTS_INSTANCE_ID"):
        kwargs["instance"] = env["TTS_INSTANCE_ID"]
    for lang, order in kwargs["language_priority"].items():  # type: ignore[attr-defined]
        unknown_here = [b for b in order if b not in DEFAULT_BACKENDS]
        if unknown_here:
            raise ConfigError(
                f"TTS_LANGUAGE_PRIORITY for {lang!r} names unknown backends {unknown_here}; "
                f"known: {', '.join(DEFAULT_BACKENDS)}"
            )
    voices_dir = kwargs.get("piper_voices_dir")
    if isinstance(voices_dir, Path) and not voices_dir.is_dir():
        raise ConfigError(f"TTS_PIPER_VOICES_DIR={voices_dir} is not a directory")
    if kwargs["log_level"] not in LOG_LEVELS:
        raise ConfigError(f"TTS_LOG_LEVEL={kwargs['log_level']!r}: expected one of {', '.join(LOG_LEVELS)}")
    if kwargs["log_format"] not in ("console", "json"):
        raise ConfigError(f"TTS_LOG_FORMAT={kwargs['log_format']!r}: expected console or json")
    return Settings(**kwargs)  # type: ignore[arg-type]
