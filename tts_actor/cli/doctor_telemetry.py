"""Doctor checks for what the service exposes to operators: trace export and the metrics port."""

from __future__ import annotations

import socket
from collections.abc import Mapping

from tts_actor.cli.doctor_result import CheckResult, Level
from tts_actor.config import Settings


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
