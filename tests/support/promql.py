"""The shipped Prometheus rules and dashboard, read for tests: metric names in PromQL, promtool, the exposed set."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml  # PyYAML comes with huggingface_hub
from prometheus_client import REGISTRY

import tts_actor.observability.metrics  # noqa: F401  (registers the service's metrics)

OPS = Path(__file__).resolve().parents[2] / "ops"
RULES = OPS / "prometheus" / "alerts.yml"
RULE_TESTS = OPS / "prometheus" / "tests"
DASHBOARD = OPS / "grafana" / "dashboards" / "tts-actor.json"
RUNBOOK = OPS.parent / "docs" / "runbook.md"
PROMTOOL_MISSING = (
    "promtool is not on the PATH: install Debian's prometheus package (apt-get install prometheus; "
    ".ci/run does it on CI) to run the alert rules' tests"
)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
PROMETHEUS_MADE = {"up"}  # series Prometheus adds to every scrape target itself
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool() -> str | None:
    return shutil.which("promtool")


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (not functions, keywords, labels, numbers or durations)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _NAME.findall(text) if name.lower() not in KEYWORDS}


def label_matchers(expr: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) for every ``metric{label="value"}`` matcher in an expression."""
    return [(m, label, value) for m, body in _SELECTOR.findall(expr) for label, _, value in _MATCHER.findall(body)]


def exposed_series() -> dict[str, tuple[str, ...]]:
    """Series name -> its labels, for everything the service's registry exposes (its own and the process')."""
    series: dict[str, tuple[str, ...]] = {}
    for family in REGISTRY.collect():
        labels = tuple(getattr(REGISTRY._names_to_collectors.get(family.name), "_labelnames", ()))
        for suffix in SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = labels + (("le",) if suffix == "_bucket" else ())
        for sample in family.samples:
            series.setdefault(sample.name, tuple(sample.labels))
    return series


def exported_tts_families() -> dict[str, str]:
    """Series name -> family name, for every tts_* family in the default registry."""
    names = {}
    for family in REGISTRY.collect():
        if family.name.startswith("tts_"):
            for suffix in SUFFIXES.get(family.type, ("",)):
                names[family.name + suffix] = family.name
    return names
