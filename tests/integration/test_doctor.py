"""`tts-actor doctor` run for real, in-process, against a real nats-server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.cli import OFFLINE_HUB, closed_loopback_port
from tests.support.helpers import torch_install_fix_start
from tts_actor.cli.doctor import run_doctor
from tts_actor.config import load_settings
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    server = EmbeddedNatsServer(store_dir=tmp_path_factory.mktemp("nats"), port=-1)
    url = server.start()
    yield url
    server.stop()


def doctor_json(capsys: pytest.CaptureFixture[str], settings, env: dict[str, str]) -> tuple[int, dict]:
    code = run_doctor(settings, as_json=True, env=env)
    report = json.loads(capsys.readouterr().out)
    return code, {c["name"]: c for c in report["checks"]} | {"exit_code": report["exit_code"]}


def test_reachable_nats_with_jetstream_passes_and_missing_package_shows_fix(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings({}).with_(nats_url=nats_url, backends=("piper", "chatterbox"), cache_dir=tmp_path)
    code, checks = doctor_json(capsys, settings, OFFLINE_HUB)
    assert code == 0 and checks["exit_code"] == 0
    assert checks["nats"]["level"] == "ok" and nats_url in checks["nats"]["detail"]
    assert checks["jetstream"]["level"] == "ok"
    assert checks["kv bucket"]["level"] == "ok"
    assert checks["backend piper"]["level"] == "ok"
    assert checks["piper voices"]["level"] == "ok"
    chatterbox = checks["backend chatterbox"]
    assert chatterbox["level"] == "warn"
    assert "chatterbox" in chatterbox["detail"]
    assert chatterbox["fix"].startswith(torch_install_fix_start("chatterbox"))
    assert checks["cache dir"]["level"] == "ok"
    assert checks["hub"]["level"] == "warn"  # unreachable hub is a warning: Piper works offline
    assert checks["watermark"]["level"] == "ok" and "PerthNet" in checks["watermark"]["detail"]  # the extra is here
    off = doctor_json(capsys, settings.with_(watermark="off"), OFFLINE_HUB)[1]["watermark"]
    assert off["level"] == "ok" and off["detail"].startswith("off")


def test_unreachable_nats_fails_fast_with_a_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{closed_loopback_port()}"
    settings = load_settings({}).with_(nats_url=url, backends=("piper",), cache_dir=tmp_path)
    started = time.perf_counter()
    code, checks = doctor_json(capsys, settings, OFFLINE_HUB)
    assert time.perf_counter() - started < 3.0
    assert code == 1
    assert checks["nats"]["level"] == "fail"
    assert url in checks["nats"]["detail"]
    assert "NATS_URL" in checks["nats"]["fix"]


def test_table_output_names_failures_and_their_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unwritable = tmp_path / "file-not-dir"
    unwritable.write_text("x")
    settings = load_settings({}).with_(backends=("piper", "xtts"), cache_dir=unwritable / "cache")
    code = run_doctor(settings, as_json=False, env={**OFFLINE_HUB, "HF_HUB_OFFLINE": "1"})
    out = capsys.readouterr().out
    assert code == 1
    assert "[FAIL] cache dir" in out and "fix: Set TTS_CACHE_DIR" in out
    assert f"fix: {torch_install_fix_start('xtts')}" in out
    assert "HF_HUB_OFFLINE=1" in out
    assert "nats-server" in out  # NATS_URL unset: the embedded binary is checked instead
