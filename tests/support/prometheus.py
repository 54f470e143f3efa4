"""A real Prometheus (Debian's ``prometheus`` binary) on loopback, scraping one service, with the shipped rules.

The shipped alerts wait minutes (``for: 5m``) before they fire; the copy loaded here has every ``for``
set to 0 s, so a test reads an alert in seconds. The expressions, labels and annotations are the
shipped ones, and scraping and evaluation run every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import yaml

from tests.support.cli import free_port
from tests.support.helpers import eventually
from tests.support.promql import RULES

PROMETHEUS_MISSING = (
    "the prometheus binary is not on the PATH: install Debian's prometheus package (apt-get install prometheus; "
    ".ci/run does it on CI) to run the alerts against a real Prometheus"
)
JOB = "tts-actor"  # the shipped job name: the alerts read up{job="tts-actor"}


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def rules_without_for(folder: Path) -> Path:
    """The shipped rules with every alert's ``for`` at 0 s (nothing else changed)."""
    spec = yaml.safe_load(RULES.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = folder / "alerts.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass
class Prometheus:
    url: str
    http: httpx2.AsyncClient

    async def api(self, path: str, **params: str) -> Any:
        reply = await self.http.get(f"{self.url}/api/v1/{path}", params=params)
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    async def alerts(self) -> list[dict[str, Any]]:
        return (await self.api("alerts"))["alerts"]

    async def firing(self) -> dict[str, list[dict[str, str]]]:
        """Alert name -> the label sets it fires with now."""
        firing: dict[str, list[dict[str, str]]] = {}
        for alert in await self.alerts():
            if alert["state"] == "firing":
                firing.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return firing

    async def value(self, query: str) -> list[dict[str, Any]]:
        return (await self.api("query", query=query))["result"]

    async def last_evaluation(self) -> float:
        """Unix time of the latest rule evaluation (of any group): wait past it for a verdict on new samples."""
        groups = (await self.api("rules"))["groups"]
        return max((_unix(g["lastEvaluation"]) for g in groups if g.get("lastEvaluation")), default=0.0)


def _unix(timestamp: str) -> float:
    """RFC 3339 with nanoseconds (Go's form), as Python reads it: microseconds at most."""
    whole, _, fraction = timestamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


@contextlib.asynccontextmanager
async def running_prometheus(folder: Path, metrics_port: int) -> AsyncIterator[Prometheus]:
    """Prometheus on a free loopback port, scraping ``127.0.0.1:metrics_port`` every second; stopped on exit."""
    binary = prometheus_binary()
    assert binary is not None, PROMETHEUS_MISSING
    rules = rules_without_for(folder)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
        env={**os.environ, "TZ": "UTC"},  # timestamps in the API in UTC, as _unix reads them
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert proc.returncode is None, (folder / "prometheus.log").read_text()[-2000:]
                with contextlib.suppress(httpx2.TransportError):
                    return (await http.get(f"{url}/-/ready")).status_code == 200
                return False

            await eventually(ready, timeout_s=30, interval_s=0.2)
            yield Prometheus(url, http)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
