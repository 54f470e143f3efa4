"""The shipped alert rules in a real Prometheus (Debian's package), scraping a real ``tts-actor serve``.

Prometheus scrapes and evaluates every second, with the shipped rules' ``for`` set to 0 s (the shipped
waits are minutes; see :mod:`tests.support.prometheus`). A healthy service fires nothing, and every
dashboard query evaluates there; a service with a backend whose package is missing (xtts: coqui-tts is
not installed here) and more requests than its one in-flight slot fires the backend-failed and
saturation alerts, read through Prometheus' HTTP API; a download that stalls against the fake hub fires
"downloading too long" while it hangs, then backend-failed with ``download_stalled`` once the service's
watchdog gives up on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import nats
import pytest

from tests.support.cli import free_port
from tests.support.fakehub import FakeHub, Fault
from tests.support.helpers import eventually
from tests.support.prometheus import PROMETHEUS_MISSING, Prometheus, prometheus_binary, running_prometheus
from tests.support.promql import alerts as shipped_alerts
from tests.support.promql import dashboard_exprs
from tests.support.serve_process import ServeProcess, serve_env, spawn

pytestmark = [
    pytest.mark.skipif(prometheus_binary() is None, reason=PROMETHEUS_MISSING),
    pytest.mark.timeout(300),
]
ALERTS = [a["alert"] for a in shipped_alerts()]
TEXT = "The quick brown fox jumps over the lazy dog, and the translation pipeline waits for its audio."


async def drain_log(serve: ServeProcess) -> None:
    """Keep reading the service's log: a full pipe would block it."""
    assert serve.proc.stderr is not None
    while line := await serve.proc.stderr.readline():
        text = line.decode(errors="replace").strip()
        if text.startswith("{"):
            serve.events.append(json.loads(text))


@contextlib.asynccontextmanager
async def service_and_prometheus(tmp_path: Path, **settings: str):
    """``tts-actor serve`` (embedded NATS) with Piper loaded, and Prometheus scraping it; (NATS URL, Prometheus)."""
    nats_port, metrics_port = free_port(), free_port()
    env = serve_env(tmp_path) | {"TTS_EMBEDDED_NATS_PORT": str(nats_port), "TTS_METRICS_PORT": str(metrics_port)}
    env.update(settings)
    async with spawn([sys.executable, "-m", "tts_actor", "serve"], env) as serve:
        await serve.wait_for("state_changed", 90, backend="piper", to_state="loaded")
        await serve.wait_for("metrics_serving", 30)
        drain = asyncio.create_task(drain_log(serve))
        folder = tmp_path / "prometheus"
        folder.mkdir()
        try:
            async with running_prometheus(folder, metrics_port) as prometheus:
                yield f"nats://127.0.0.1:{nats_port}", prometheus
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


async def scraped(prometheus: Prometheus, query: str) -> bool:
    """The query has a sample now whose value is 1 (what Prometheus has scraped, as it evaluates it)."""
    return any(float(s["value"][1]) == 1 for s in await prometheus.value(query))


async def test_a_healthy_service_fires_nothing_and_every_dashboard_query_evaluates(tmp_path: Path) -> None:
    async with service_and_prometheus(tmp_path) as (_, prometheus):
        # startup transients (Piper loading, the KV watch's first read) are over: each of these is 1
        settled = ["up", "tts_nats_connected", "tts_state_kv_up", "tts_fleet_instances", "tts_language_ready"]
        for query in settled:
            await eventually(lambda q=query: scraped(prometheus, q), timeout_s=60, interval_s=0.2, explain=settled.copy)
        after = time.time() + 2.5  # and the rules have been evaluated on those samples, twice
        await eventually(lambda: _evaluated_after(prometheus, after), timeout_s=30, interval_s=0.25)
        alerts = await prometheus.alerts()
        failed = []
        for expr in dashboard_exprs():  # Grafana's $__rate_interval, as Grafana would set it for 1 s scrapes
            reply = await prometheus.http.get(
                f"{prometheus.url}/api/v1/query", params={"query": expr.replace("$__rate_interval", "1m")}
            )
            if reply.json().get("status") != "success":
                failed.append((expr, reply.text[:200]))
        present = await prometheus.value("tts_backend_state == 1")
        groups = (await prometheus.api("rules"))["groups"]
    loaded = [r for g in groups for r in g["rules"]]
    assert len([r for r in loaded if r["type"] == "alerting"]) == len(ALERTS)  # the rules are there and
    assert {r["health"] for r in loaded} == {"ok"}, [r for r in loaded if r["health"] != "ok"]  # evaluate
    assert alerts == [], alerts
    assert not failed, failed
    assert [(s["metric"]["backend"], s["metric"]["state"]) for s in present] == [("piper", "loaded")]


async def _evaluated_after(prometheus: Prometheus, moment: float) -> bool:
    return await prometheus.last_evaluation() > moment


async def test_a_failed_backend_and_a_saturated_service_fire_their_alerts(tmp_path: Path) -> None:
    settings = {"TTS_BACKENDS": "piper,xtts", "TTS_MAX_INFLIGHT": "1", "TTS_BACKEND_QUEUE_DEPTH": "1"}
    async with service_and_prometheus(tmp_path, **settings) as (url, prometheus):
        nc = await nats.connect(url)
        stop = asyncio.Event()
        outcomes: dict[str, int] = {}

        async def one() -> None:
            payload = json.dumps({"text": TEXT, "language": "en", "backend": "piper", "cache": False}).encode()
            try:
                msg = await nc.request("tts.synthesize", payload, timeout=10)
            except Exception as exc:  # counted, never raised: the load keeps going
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                return
            code = "error" if (msg.headers or {}).get("Nats-Service-Error-Code") else "audio"
            outcomes[code] = outcomes.get(code, 0) + 1

        async def load() -> None:  # bursts of 6 against one in-flight slot, until the alert is read
            while not stop.is_set():
                await asyncio.gather(*(one() for _ in range(6)))

        async def fired() -> bool:
            firing = await prometheus.firing()
            return {"TtsBackendFailed", "TtsFleetSaturated", "TtsLanguageUnserved"} <= set(firing)

        driver = asyncio.create_task(load())
        try:
            await eventually(fired, timeout_s=120, interval_s=0.5, explain=lambda: outcomes)
            firing = await prometheus.firing()
            refused = await prometheus.value("tts:requests_refused:ratio_rate5m")
        finally:
            stop.set()
            await driver
            await nc.close()
    assert {"backend": "xtts", "reason": "package_missing"}.items() <= firing["TtsBackendFailed"][0].items()
    assert [labels["backend"] for labels in firing["TtsBackendFailed"]] == ["xtts"]
    assert firing["TtsBackendFailed"][0]["severity"] == "warning"
    assert float(refused[0]["value"][1]) > 0.05
    assert outcomes.get("error", 0) > 0 and outcomes.get("audio", 0) > 0, outcomes
    unserved = {labels["language"] for labels in firing["TtsLanguageUnserved"]}
    assert "de" in unserved and "en" not in unserved  # xtts speaks German, Piper (loaded) English
    assert "TtsNatsDisconnected" not in firing and "TtsStateKvWritesFailing" not in firing


async def test_a_stalled_download_fires_while_it_hangs_then_as_a_failure(tmp_path: Path) -> None:
    """MMS (its package is installed) downloads from the fake hub, whose weights file never answers."""
    if not os.environ.get("CI"):  # in CI `make test` installs the [mms] extra: a missing one must fail
        pytest.importorskip("transformers")
    files = {name: b"{}" for name in ("config.json", "vocab.json", "tokenizer_config.json")}
    files["model.safetensors"] = b"\0" * 100_000
    with FakeHub() as hub:
        hub.add_repo("facebook/mms-tts-eng", files)
        hub.set_fault("facebook/mms-tts-eng", Fault.SILENT, only="model.safetensors")
        settings = {
            "TTS_BACKENDS": "piper,mms",
            "TTS_MMS_LANGUAGES": "en",
            "TTS_ACCEPT_LICENSES": "cc-by-nc-4.0",
            "HF_ENDPOINT": hub.url,
            "TTS_DOWNLOAD_STALL_TIMEOUT_S": "15",  # long enough for Prometheus to see it downloading
            "TTS_DOWNLOAD_READ_TIMEOUT_S": "60",  # the stall watchdog decides, not the read timeout
            "TTS_RETRY_MAX_ATTEMPTS": "0",
        }
        async with service_and_prometheus(tmp_path, **settings) as (_, prometheus):

            async def firing(alert: str) -> list[dict[str, str]]:
                return (await prometheus.firing()).get(alert, [])

            await eventually(lambda: firing("TtsDownloadTooLong"), timeout_s=30, interval_s=0.25)
            hanging = await firing("TtsDownloadTooLong")
            await eventually(lambda: firing("TtsBackendFailed"), timeout_s=60, interval_s=0.25)
            failed = await firing("TtsBackendFailed")
            still_downloading = await firing("TtsDownloadTooLong")
    assert [(a["backend"], a["state"]) for a in hanging] == [("mms", "downloading")]
    assert [(a["backend"], a["reason"]) for a in failed] == [("mms", "download_stalled")]
    assert still_downloading == []  # out of downloading: that alert resolved
