"""``tts-actor doctor``: diagnose this host without a running service; this module is the report.

The checks live by area (:mod:`.doctor_engines`, :mod:`.doctor_nats`, :mod:`.doctor_models`,
:mod:`.doctor_telemetry`), each returning a :class:`CheckResult` with a fix. Network checks run
in daemon threads with a hard deadline, so an unresolvable host or a black-holed port cannot
hold the doctor beyond a few seconds. Exit code 0 means the default backend (piper) can serve
from here; any FAIL result means it cannot.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping

from tts_actor.cli.doctor_engines import check_backend_packages, check_piper_voices, check_python, check_watermark
from tts_actor.cli.doctor_models import check_cache_dir, check_download_flags, check_hub
from tts_actor.cli.doctor_nats import check_embedded_server, check_nats, check_nats_binary
from tts_actor.cli.doctor_result import NETWORK_TIMEOUT_S, CheckResult, Level
from tts_actor.cli.doctor_telemetry import check_metrics_port, check_otel
from tts_actor.config import Settings


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

    results = [check_python(), *check_backend_packages(settings), check_watermark(settings)]
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
