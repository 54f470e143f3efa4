"""The alert rules: valid for promtool, tested per alert, reading only what the service exposes, each with a runbook."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from statemachine import State
from tests.support.promql import (
    PROMETHEUS_MADE,
    PROMTOOL_MISSING,
    RULE_TESTS,
    RULES,
    RUNBOOK,
    alerts,
    dashboard_exprs,
    exposed_series,
    label_matchers,
    metric_names,
    promtool,
    recorded_names,
    rule_groups,
)
from tts_actor.errors import ErrorCode
from tts_actor.observability.metrics import FIRST_AUDIO_SECONDS

needs_promtool = pytest.mark.skipif(promtool() is None, reason=PROMTOOL_MISSING)
ALERT_NAMES = [a["alert"] for a in alerts()]
OUTCOMES = {c.value for c in ErrorCode} | {"ok", "no_reply_subject", "reply_lost"}


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120)


def _squash(expr: str) -> str:
    return " ".join(expr.split())


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = _run("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in rule_groups())
    assert f"SUCCESS: {count} rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_promtool_unit_tests_of_each_alert_pass(alert: str) -> None:
    """``ops/prometheus/tests/<alert>.yml``: series in, the alert (or none) out, at the times that matter."""
    path = RULE_TESTS / f"{alert}.yml"
    assert path.is_file(), f"no promtool test for {alert}: write {path.relative_to(RULES.parents[2])}"
    spec = yaml.safe_load(path.read_text())
    cases = [t for group in spec["tests"] for t in group.get("alert_rule_test", [])]
    assert any(c["alertname"] == alert and c.get("exp_alerts") for c in cases), "no case where it fires"
    assert any(c["alertname"] == alert and not c.get("exp_alerts") for c in cases), "no case where it must not fire"
    result = _run("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_slis_pass() -> None:
    result = _run("test", "rules", RULE_TESTS / "slis.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_test_is_for_a_shipped_alert() -> None:
    tested = {p.stem for p in RULE_TESTS.glob("*.yml")} - {"slis"}
    assert tested == set(ALERT_NAMES)


def test_rules_read_only_series_the_service_exposes_with_labels_it_sets() -> None:
    exposed = exposed_series()
    recorded = recorded_names()
    used = {name for g in rule_groups() for r in g["rules"] for name in metric_names(r["expr"])}
    assert {"tts_backend_failed_reason", "process_resident_memory_bytes", "tts_memory_guard_bytes"} <= used
    unknown = used - set(exposed) - recorded - PROMETHEUS_MADE
    assert not unknown, f"rules read series nothing exposes: {sorted(unknown)}"
    for rule in (r for g in rule_groups() for r in g["rules"]):
        for metric, label, value in label_matchers(rule["expr"]):
            if metric in PROMETHEUS_MADE:
                continue
            assert label in exposed[metric], f"{metric} has no label {label!r}: {rule['expr']}"
            values = set(value.split("|"))
            if label == "outcome" and metric == "tts_requests_total":
                assert values <= OUTCOMES, values - OUTCOMES
            if label == "state":
                assert values <= {s.value for s in State}
            if label == "le":
                assert float(value) in FIRST_AUDIO_SECONDS._upper_bounds and value == str(float(value))


def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        url = alert["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", url
        assert name.lower() in anchors, f"docs/runbook.md has no section {name}"
        section = runbook.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Means**", "**Confirm**", "**Do**", "**Escalate**"):
            assert part in section, f"{name}: the runbook section lacks {part}"


def test_recording_rules_feed_the_alerts_and_the_dashboard() -> None:
    recorded = recorded_names()
    read = {n for expr in [a["expr"] for a in alerts()] + dashboard_exprs() for n in metric_names(expr)}
    assert recorded <= read, f"recorded but never read: {sorted(recorded - read)}"
    assert {n for n in read if ":" in n} <= recorded


def test_dashboard_shows_each_alert_expression_and_the_slos() -> None:
    panels = {_squash(e) for e in dashboard_exprs()}
    for alert in alerts():
        assert _squash(alert["expr"]) in panels, f"no dashboard panel with the expression of {alert['alert']}"
    for sli in ("tts:first_audio_slow:ratio_rate", "tts:requests_errors:ratio_rate"):
        assert any(e.startswith(sli) and "/ 0.0" in e for e in panels), f"no burn-rate panel for {sli}"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's query as a recording rule, for promtool's (Prometheus' own) parser; Grafana's range variable set."""
    exprs = [e.replace("$__rate_interval", "5m") for e in dashboard_exprs()]
    records = [{"record": f"panel:{i}", "expr": e} for i, e in enumerate(exprs)]
    rules = {"groups": [{"name": "panels", "rules": records}]}
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    result = _run("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    bad = path.with_name("bad.yml")  # the check can fail: a broken query is reported
    bad.write_text(yaml.safe_dump({"groups": [{"name": "p", "rules": [{"record": "p:0", "expr": "sum(rate(x[5m])"}]}]}))
    assert _run("check", "rules", bad).returncode != 0
