"""Settings from environment variables, with documented defaults.

Read once at start-up into a frozen dataclass so that every other module takes
explicit values and the tests can build one without touching the environment.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_BACKENDS = ("piper", "chatterbox", "mms", "xtts", "higgs")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
MAX_SECONDS = 7 * 24 * 3600.0  # a week: beyond this a timeout is a typo (and overflows timer APIs)
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
WATERMARK_MODES = ("auto", "on", "off")


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tts-actor"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Field docs are docs/configuration.md."""

    nats_url: str | None = None
    embedded_nats_port: int = 4222
    # the embedded server is restarted this many times in a row after an unasked exit (0: never)
    embedded_nats_max_restarts: int = 5
    nats_connect_timeout_s: float = 10.0
    # /healthz fails once the NATS connection has been down longer than this
    health_nats_grace_s: float = 10.0
    subject_prefix: str = "tts"
    kv_bucket: str = "tts_state"
    # fleet and shared stores (JetStream): entries of an instance that stops refreshing age out after fleet_ttl_s
    fleet_ttl_s: float = 30.0
    js_replicas: int = 1
    profiles_bucket: str = "tts_voices"
    audio_cache_bucket: str = "tts_audio"
    consents_bucket: str = "tts_consents"
    # a voice profile needs a consent record (tts.consents.create) unless consent is kept elsewhere
    require_consent: bool = True
    audio_cache_ttl_s: float = 7 * 24 * 3600.0
    audio_cache_max_bytes: int = 1024**3
    audit_max_age_s: float = 365 * 24 * 3600.0  # how long the audit stream keeps events
    erasure_max_age_s: float = 30 * 24 * 3600.0  # how long an instance that was away can still learn an erasure
    # hot files kept in this instance's memory in front of the object store (0: none)
    audio_cache_memory_bytes: int = 64 * 1024**2
    # fleet-wide coalescing: a synthesis in progress holds a claim in this KV bucket, refreshed every third of its TTL
    audio_claims_bucket: str = "tts_claims"
    audio_claim_ttl_s: float = 10.0
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
    max_audio_s: float = 600.0  # the most speech one request may ask for, estimated from its spoken form
    max_request_bytes: int = 4 * 1024 * 1024
    max_wait_ms: int = 30_000
    max_inflight: int = 32
    backend_queue_depth: int = 32  # as deep as the inflight cap: one gate, and a burst waits its turn
    synthesis_timeout_s: float = 120.0
    # a priority class waiting this long since it was last served goes first for one segment (bulk never starves)
    priority_ageing_s: float = 2.0
    max_rss_bytes: int = 0  # the memory guard: above this resident size the heaviest backend is reloaded; 0: off
    clock_skew_ms: int = 2000  # how far a caller's clock may differ from ours when its Tts-Deadline is read
    shutdown_grace_s: float = 10.0
    idle_unload_s: float = 0.0
    segment_silence_ms: int = 150  # silence between two segments of one reply
    # TTS_MARK_SYNTHETIC: the "AI-generated" comment in every container's metadata (EU AI Act Art. 50(2))
    mark_synthetic: bool = True
    # TTS_WATERMARK: the inaudible PerthNet mark on engines that do not mark their own output (auto: when installed)
    watermark: str = "auto"
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
    # per backend, from TTS_<BACKEND>_WORKERS: engine sessions run at once (for engines that allow it; default 1)
    backend_workers: Mapping[str, int] = field(default_factory=dict)
    # the hub to download models from (TTS_HF_ENDPOINT, else HF_ENDPOINT); tests point it at a local fake
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    # HF_TOKEN, for gated repositories; kept out of repr so it never reaches a log line
    hf_token: str | None = field(default=None, repr=False)
    # TTS_ACCEPT_LICENSES: licence ids (e.g. cpml, cc-by-nc-4.0) the operator accepts for backends that need it
    accepted_licenses: frozenset[str] = frozenset()
    # how this instance authenticates to NATS (secrets kept out of repr); see tts_actor/nats_auth.py
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_token: str | None = field(default=None, repr=False)
    nats_nkey_seed_file: Path | None = None
    nats_creds_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # NATS_INBOX_PREFIX: where this connection's replies arrive; a secured server lets each user read only its own
    nats_inbox_prefix: str | None = None

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def workers_for(self, backend: str) -> int:
        return self.backend_workers.get(backend, 1)

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


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    kind: type = float,
    minimum: float = 0,
    maximum: float | None = None,
    positive: bool = False,
) -> float:
    """A finite number in ``[minimum, maximum]`` (above 0 when ``positive``), the variable named in any refusal."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={_shown(raw)}: expected {what}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={_shown(raw)}: must be a finite number")
    if positive and value <= 0:
        raise ConfigError(f"{name}={_shown(raw)}: must be greater than 0")
    if value < minimum:
        raise ConfigError(f"{name}={_shown(raw)}: must be at least {minimum:g}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={_shown(raw)}: must be at most {maximum:g}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, positive: bool = True) -> float:
    """A duration: finite, at most a week, and above 0 unless 0 means "off"/"none" (``positive=False``)."""
    return _number(env, name, default, maximum=MAX_SECONDS, positive=positive)


def _port(env: Mapping[str, str], name: str, default: int, allow_zero: bool = False) -> int:
    return int(_number(env, name, default, int, minimum=0 if allow_zero else 1, maximum=65535))


def _shown(raw: str) -> str:
    """An env value for an error message, shortened: a 5000-digit number must not fill the terminal."""
    return repr(raw) if len(raw) <= 40 else f"{raw[:20]!r}... ({len(raw)} characters)"


def check_nats_url(raw: str) -> str:
    """``NATS_URL``: one or more comma-separated ``nats://host:port`` (tls, ws, wss too; scheme optional)."""
    for server in (part.strip() for part in raw.split(",")):
        parsed = urlparse(server if "://" in server else f"nats://{server}")
        if parsed.scheme not in NATS_SCHEMES:
            raise ConfigError(
                f"NATS_URL={_shown(raw)}: scheme {parsed.scheme!r} is not one of {', '.join(NATS_SCHEMES)}; "
                "expected e.g. nats://127.0.0.1:4222"
            )
        try:
            port = parsed.port
        except ValueError:
            raise ConfigError(f"NATS_URL={_shown(raw)}: the port must be a number from 1 to 65535") from None
        if not parsed.hostname or port == 0:
            raise ConfigError(f"NATS_URL={_shown(raw)}: expected host[:port], e.g. nats://127.0.0.1:4222")
    return raw


def _existing_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={raw}: no such file")
    return path


def _inbox_prefix(raw: str) -> str | None:
    """``NATS_INBOX_PREFIX``: subject tokens, no wildcard, no leading or trailing dot (e.g. ``_INBOX_translator-a``)."""
    if not raw:
        return None
    if any(c in raw for c in " \t*>") or raw.startswith(".") or raw.endswith(".") or ".." in raw:
        raise ConfigError(
            f"NATS_INBOX_PREFIX={_shown(raw)}: expected subject tokens without wildcards, e.g. _INBOX_translator-a"
        )
    return raw


def _nats_auth(env: Mapping[str, str]) -> dict[str, object]:
    """NATS credentials: user+password, token, NKey seed or creds file (one of them), and TLS files."""
    auth: dict[str, object] = dict(
        nats_user=env.get("NATS_USER") or None,
        nats_password=env.get("NATS_PASSWORD") or None,
        nats_token=env.get("NATS_TOKEN") or None,
        nats_nkey_seed_file=_existing_file(env, "NATS_NKEY"),
        nats_creds_file=_existing_file(env, "NATS_CREDS"),
        nats_tls_ca=_existing_file(env, "NATS_CA"),
        nats_tls_cert=_existing_file(env, "NATS_CERT"),
        nats_tls_key=_existing_file(env, "NATS_KEY"),
        nats_inbox_prefix=_inbox_prefix(env.get("NATS_INBOX_PREFIX", "").strip()),
    )
    if bool(auth["nats_user"]) != bool(auth["nats_password"]):
        raise ConfigError("NATS_USER and NATS_PASSWORD go together: set both or neither")
    methods = [
        name
        for name, on in (
            ("NATS_USER", auth["nats_user"]),
            ("NATS_TOKEN", auth["nats_token"]),
            ("NATS_NKEY", auth["nats_nkey_seed_file"]),
            ("NATS_CREDS", auth["nats_creds_file"]),
        )
        if on
    ]
    if len(methods) > 1:
        raise ConfigError(f"{' and '.join(methods)} are set: choose one way to authenticate to NATS")
    if bool(auth["nats_tls_cert"]) != bool(auth["nats_tls_key"]):
        raise ConfigError("NATS_CERT and NATS_KEY go together: a client certificate needs its private key")
    return auth


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
    backend_workers = {
        name: int(_number(env, f"TTS_{name.upper()}_WORKERS", 1, int, 1, maximum=64))
        for name in DEFAULT_BACKENDS
        if env.get(f"TTS_{name.upper()}_WORKERS")
    }
    nats_url = (env.get("NATS_URL") or "").strip() or None
    kwargs: dict[str, object] = dict(
        nats_url=check_nats_url(nats_url) if nats_url else None,
        embedded_nats_port=_port(env, "TTS_EMBEDDED_NATS_PORT", 4222),
        embedded_nats_max_restarts=int(_number(env, "TTS_EMBEDDED_NATS_MAX_RESTARTS", 5, int, maximum=1000)),
        nats_connect_timeout_s=_seconds(env, "TTS_NATS_CONNECT_TIMEOUT_S", 10.0),
        health_nats_grace_s=_seconds(env, "TTS_HEALTH_NATS_GRACE_S", 10.0),
        subject_prefix=env.get("TTS_SUBJECT_PREFIX", "tts"),
        kv_bucket=env.get("TTS_KV_BUCKET", "tts_state"),
        fleet_ttl_s=_number(env, "TTS_FLEET_TTL_S", 30.0, float, 1.0),
        js_replicas=int(_number(env, "TTS_JS_REPLICAS", 1, int, 1)),
        profiles_bucket=env.get("TTS_PROFILES_BUCKET", "tts_voices"),
        audio_cache_bucket=env.get("TTS_AUDIO_CACHE_BUCKET", "tts_audio"),
        consents_bucket=env.get("TTS_CONSENTS_BUCKET", "tts_consents"),
        require_consent=_bool(env, "TTS_REQUIRE_CONSENT", True),
        audio_cache_ttl_s=_number(env, "TTS_AUDIO_CACHE_TTL_S", 7 * 24 * 3600.0, float, 1.0),
        audio_cache_max_bytes=int(_number(env, "TTS_AUDIO_CACHE_MAX_BYTES", 1024**3, int, 1024 * 1024)),
        audit_max_age_s=_number(env, "TTS_AUDIT_MAX_AGE_S", 365 * 24 * 3600.0, float, 1.0),
        erasure_max_age_s=_number(env, "TTS_ERASURE_MAX_AGE_S", 30 * 24 * 3600.0, float, 60.0),
        audio_cache_memory_bytes=int(_number(env, "TTS_AUDIO_CACHE_MEMORY_BYTES", 64 * 1024**2, int, 0, maximum=2**40)),
        audio_claims_bucket=env.get("TTS_AUDIO_CLAIMS_BUCKET", "tts_claims"),
        audio_claim_ttl_s=_number(env, "TTS_AUDIO_CLAIM_TTL_S", 10.0, float, 1.0, maximum=3600),
        queue_group=env.get("TTS_QUEUE_GROUP", "tts"),
        backends=backends,
        language_priority=_language_priority(env.get("TTS_LANGUAGE_PRIORITY", "")),
        startup_timeout_s=_seconds(env, "TTS_STARTUP_TIMEOUT_S", 30.0),
        download_connect_timeout_s=_seconds(env, "TTS_DOWNLOAD_CONNECT_TIMEOUT_S", 3.0),
        download_read_timeout_s=_seconds(env, "TTS_DOWNLOAD_READ_TIMEOUT_S", 10.0),
        download_stall_timeout_s=_seconds(env, "TTS_DOWNLOAD_STALL_TIMEOUT_S", 30.0),
        download_total_timeout_s=_seconds(env, "TTS_DOWNLOAD_TOTAL_TIMEOUT_S", 1800.0),
        retry_backoff_initial_s=_seconds(env, "TTS_RETRY_BACKOFF_INITIAL_S", 5.0, positive=False),
        retry_backoff_max_s=_seconds(env, "TTS_RETRY_BACKOFF_MAX_S", 300.0, positive=False),
        retry_max_attempts=int(_number(env, "TTS_RETRY_MAX_ATTEMPTS", 5, int, maximum=1000)),
        allow_download=_bool(env, "TTS_ALLOW_DOWNLOAD", True) and not offline,
        max_text_chars=int(_number(env, "TTS_MAX_TEXT_CHARS", 5000, int, 1, maximum=10**7)),
        max_audio_s=_seconds(env, "TTS_MAX_AUDIO_S", 600.0),
        max_request_bytes=int(_number(env, "TTS_MAX_REQUEST_BYTES", 4 * 1024 * 1024, int, 1024, maximum=2**30)),
        max_wait_ms=int(_number(env, "TTS_MAX_WAIT_MS", 30_000, int, maximum=MAX_SECONDS * 1000)),
        max_inflight=int(_number(env, "TTS_MAX_INFLIGHT", 32, int, 1, maximum=100_000)),
        backend_queue_depth=int(_number(env, "TTS_BACKEND_QUEUE_DEPTH", 32, int, 1, maximum=100_000)),
        synthesis_timeout_s=_seconds(env, "TTS_SYNTHESIS_TIMEOUT_S", 120.0),
        priority_ageing_s=_seconds(env, "TTS_PRIORITY_AGEING_S", 2.0),
        max_rss_bytes=int(_number(env, "TTS_MAX_RSS_BYTES", 0, int, 0, maximum=2**50)),
        clock_skew_ms=int(_number(env, "TTS_CLOCK_SKEW_MS", 2000, int, 0, maximum=3_600_000)),
        shutdown_grace_s=_seconds(env, "TTS_SHUTDOWN_GRACE_S", 10.0, positive=False),
        idle_unload_s=_seconds(env, "TTS_IDLE_UNLOAD_S", 0.0, positive=False),
        segment_silence_ms=int(_number(env, "TTS_SEGMENT_SILENCE_MS", 150, int, maximum=5000)),
        mark_synthetic=_bool(env, "TTS_MARK_SYNTHETIC", True),
        watermark=env.get("TTS_WATERMARK", "auto").strip().lower() or "auto",
        log_level=env.get("TTS_LOG_LEVEL", "info").lower(),
        log_format=env.get("TTS_LOG_FORMAT", "console").lower(),
        metrics_port=_port(env, "TTS_METRICS_PORT", 0, allow_zero=True),
        repo_overrides=repo_overrides,
        language_overrides=language_overrides,
        local_model_dirs=local_model_dirs,
        backend_workers=backend_workers,
        hf_endpoint=(env.get("TTS_HF_ENDPOINT") or env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/"),
        hf_token=env.get("HF_TOKEN") or None,
        accepted_licenses=frozenset(
            item.strip().lower() for item in env.get("TTS_ACCEPT_LICENSES", "").split(",") if item.strip()
        ),
        **_nats_auth(env),
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
    if kwargs["watermark"] not in WATERMARK_MODES:
        raise ConfigError(f"TTS_WATERMARK={_shown(str(kwargs['watermark']))}: expected auto, on or off")
    if kwargs["log_format"] not in ("console", "json"):
        raise ConfigError(f"TTS_LOG_FORMAT={kwargs['log_format']!r}: expected console or json")
    return Settings(**kwargs)  # type: ignore[arg-type]
