"""The ops/ files parse, agree with each other, and chart only metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml  # PyYAML comes with huggingface_hub

from tests.support.promql import OPS, dashboard_exprs, exported_tts_families
from tts_actor.wire.subjects import Subjects

PROMQL_NAME = re.compile(r"\btts_[a-z0-9_]+\b")


def test_dashboard_queries_only_exported_metrics_and_covers_them_all() -> None:
    exported = exported_tts_families()
    used = {name for expr in dashboard_exprs() for name in PROMQL_NAME.findall(expr)}
    assert used, "the dashboard has no tts_* queries"
    assert used <= set(exported), f"unknown metrics in the dashboard: {sorted(used - set(exported))}"
    assert {exported[n] for n in used} == set(exported.values())


def test_dashboard_panels_are_well_formed_and_use_the_provisioned_datasource() -> None:
    dashboard = json.loads((OPS / "grafana/dashboards/tts-actor.json").read_text())
    datasources = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())
    prometheus_uid = next(d["uid"] for d in datasources["datasources"] if d["type"] == "prometheus")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "tts-actor"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == prometheus_uid
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and all(t["expr"].count("(") == t["expr"].count(")") for t in panel["targets"])
    exprs = " ".join(dashboard_exprs())
    assert "histogram_quantile(0.95" in exprs and "histogram_quantile(0.5" in exprs
    assert "rate(tts_audio_seconds_total" in exprs and "rate(tts_synthesis_seconds_sum" in exprs


def test_compose_stack_wires_the_service_to_nats_jaeger_and_prometheus() -> None:
    compose = yaml.safe_load((OPS / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"nats", "tts-actor", "jaeger", "prometheus", "grafana"} <= set(services)
    env = services["tts-actor"]["environment"]
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["TTS_METRICS_PORT"] == "9464" and env["TTS_LOG_FORMAT"] == "json"
    build = services["tts-actor"]["build"]  # paths in compose are relative to the compose file
    assert (OPS / build["context"] / build["dockerfile"]).is_file()
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    for service in services.values():  # every bind-mounted file or folder exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (OPS / source).exists(), source

    prometheus = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert f"tts-actor:{env['TTS_METRICS_PORT']}" in targets
    job = next(j for j in prometheus["scrape_configs"] if f"tts-actor:{env['TTS_METRICS_PORT']}" in str(j))
    assert job["job_name"] == "tts-actor"  # the alerts' up{job="tts-actor"}

    # Prometheus reads the rules: its config is mounted where --config.file says, and names rule files
    # that are mounted beside it (relative paths are relative to the config file) and are the shipped ones
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config_in_container = next(a.split("=", 1)[1] for a in services["prometheus"]["command"] if "--config.file" in a)
    config_on_host = next(src for src, dst in mounts.items() if dst == config_in_container)
    assert (OPS / config_on_host).resolve() == (OPS / "prometheus/prometheus.yml").resolve()
    rule_files = prometheus["rule_files"]
    assert rule_files
    for rule_file in rule_files:
        in_container = str(Path(config_in_container).parent / rule_file)
        on_host = next((src for src, dst in mounts.items() if dst == in_container), None)
        assert on_host is not None, f"{in_container} is not mounted into the prometheus container"
        assert (OPS / on_host).resolve() == (OPS / "prometheus/alerts.yml").resolve()

    nats_conf = (OPS / "nats.conf").read_text()
    assert re.search(r"^jetstream\s*\{", nats_conf, re.MULTILINE)
    payload = re.search(r"^max_payload:\s*(\d+)MB", nats_conf, re.MULTILINE)
    assert payload and int(payload.group(1)) > 1  # above the 1 MB default

    providers = yaml.safe_load((OPS / "grafana/provisioning/dashboards/tts-actor.yml").read_text())
    grafana_mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert providers["providers"][0]["options"]["path"] == grafana_mounts["./grafana/dashboards"]


def test_the_accounts_file_exports_every_tenant_endpoint_and_each_organisation_imports_it_shared() -> None:
    """Through an import only ``share: true`` lets the service tell organisations apart (tts_actor.wire.caller)."""
    text = (OPS / "nats-accounts.conf").read_text()
    exported = set(re.findall(r'\{service: "([^"]+)"', text))
    imports = re.findall(r'\{service: \{account: TTS, subject: "([^"]+)"\}(, share: true)?\}', text)
    tenant = {subject for _, subject in Subjects().tenant_endpoints()} | {Subjects().cancel}
    assert exported == tenant  # the operator's tts.consents.admin.* stays in the service's account
    assert sorted(subject for subject, _ in imports) == sorted([*tenant, *tenant])  # ORG_A and ORG_B, each all
    assert all(shared for _, shared in imports)
