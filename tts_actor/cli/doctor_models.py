"""Doctor checks for models: the cache directory and its free space, the download flags, the hub.

Piper works offline; the torch backends need their models in TTS_CACHE_DIR or a reachable hub,
so these are warnings unless the cache cannot be written at all.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Mapping
from urllib.parse import urlparse

from tts_actor.cli.doctor_result import NETWORK_TIMEOUT_S, CheckResult, Level, run_bounded
from tts_actor.config import Settings

DEFAULT_HUB = "https://huggingface.co"
LOW_DISK_BYTES = 5 * 2**30  # the torch backends' models are several GB each


def check_cache_dir(settings: Settings) -> list[CheckResult]:
    cache = settings.cache_dir
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".doctor-"):
            pass
    except OSError as exc:
        return [
            CheckResult(
                "cache dir",
                Level.FAIL,
                f"{cache} is not writable: {exc.strerror or exc}",
                "Set TTS_CACHE_DIR to a writable directory (models and the embedded NATS store live there).",
            )
        ]
    free = shutil.disk_usage(cache).free
    disk = CheckResult("disk space", Level.OK, f"{free / 2**30:.1f} GiB free under {cache}")
    if free < LOW_DISK_BYTES:
        disk = CheckResult(
            "disk space",
            Level.WARN,
            f"only {free / 2**30:.1f} GiB free under {cache}; torch backends' models need several GB",
            "Free space or point TTS_CACHE_DIR at a larger disk (Piper alone needs little).",
        )
    return [CheckResult("cache dir", Level.OK, f"{cache} is writable"), disk]


def check_download_flags(settings: Settings, env: Mapping[str, str]) -> CheckResult:
    offline = env.get("HF_HUB_OFFLINE", "")
    allow = env.get("TTS_ALLOW_DOWNLOAD", "")
    flags = f"HF_HUB_OFFLINE={offline or '(unset)'}, TTS_ALLOW_DOWNLOAD={allow or '(unset)'}"
    if settings.allow_download:
        return CheckResult("downloads", Level.OK, f"allowed ({flags})")
    return CheckResult(
        "downloads",
        Level.WARN,
        f"off ({flags}): backends whose models are not cached will fail as offline",
        "Run `tts-actor fetch <backend>` on a host with network access (same TTS_CACHE_DIR), or enable downloads.",
    )


def hub_address(env: Mapping[str, str]) -> tuple[str, str, int]:
    """(endpoint, host, port) of the model hub, from HF_ENDPOINT or the default."""
    endpoint = env.get("HF_ENDPOINT") or DEFAULT_HUB
    parsed = urlparse(endpoint)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    return endpoint, parsed.hostname or "", port


def check_hub(env: Mapping[str, str]) -> CheckResult:
    endpoint, host, port = hub_address(env)

    def connect() -> None:
        socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S).close()

    try:
        run_bounded(connect, NETWORK_TIMEOUT_S)
    except Exception as exc:
        # a warning: Piper works offline, only downloads need the hub
        return CheckResult(
            "hub",
            Level.WARN,
            f"{endpoint} ({host}:{port}) unreachable: {type(exc).__name__}: {str(exc)[:120]}",
            "Check network/proxy or HF_ENDPOINT; or fetch models elsewhere and set HF_HUB_OFFLINE=1.",
        )
    return CheckResult("hub", Level.OK, f"{endpoint} reachable ({host}:{port})")
