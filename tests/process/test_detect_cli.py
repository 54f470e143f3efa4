"""``tts-actor detect FILE`` as a user runs it: here with the extra, through a service, and without the package."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.support.backends import isolated_settings, running_service
from tests.support.cli import cli_env, run_cli
from tests.support.speech import speak
from tts_actor.audio import watermark
from tts_actor.audio.codecs import encode_whole

TEXT = "Please call me back when you get this message."


def write_files(folder: Path) -> tuple[Path, Path]:
    clean = speak(TEXT)
    marked, unmarked = folder / "marked.opus", folder / "unmarked.wav"
    marked.write_bytes(encode_whole("opus", watermark.mark(clean).pcm, clean.sample_rate))
    unmarked.write_bytes(clean.to_wav())
    return marked, unmarked


def test_detect_says_marked_or_not_with_grep_like_exit_status(tmp_path: Path) -> None:
    marked, unmarked = write_files(tmp_path)
    env = cli_env()
    found = run_cli("detect", str(marked), env=env)
    assert found.returncode == 0 and "marked.opus: watermarked (confidence" in found.stdout, found.stderr
    clean = run_cli("detect", "--json", str(unmarked), env=env)
    assert clean.returncode == 1, clean.stderr
    body = json.loads(clean.stdout)
    assert body["watermarked"] is False and body["confidence"] < 0.2 and body["seconds"] > 1
    missing = run_cli("detect", str(tmp_path / "nope.wav"), env=env)
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "fix:" in missing.stderr
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"no audio in here" * 64)
    refused = run_cli("detect", str(junk), env=env)
    assert refused.returncode == 2 and "error [invalid_request]" in refused.stderr


def test_without_resemble_perth_it_names_the_extra_to_install(tmp_path: Path) -> None:
    marked, _ = write_files(tmp_path)
    # the package made unimportable the way Python itself spells "not installed" (a None entry in sys.modules)
    script = "import sys; sys.modules['perth'] = None; from tts_actor.cli.main import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", script, "detect", "--json", str(marked)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "watermark_unavailable" and "resemble-perth not installed" in error["message"]
    assert "pip install 'tts-actor[watermark]'" in error["fix"]


async def test_detect_through_a_running_service(tmp_path: Path) -> None:
    marked, unmarked = write_files(tmp_path)
    settings = isolated_settings(tmp_path, backends=("chatterbox",))  # no engine needed to detect
    async with running_service(tmp_path, settings) as (app, _client):
        env = cli_env(NATS_URL=app.settings.nats_url or "")
        found = await asyncio.to_thread(run_cli, "detect", "--service", "--json", str(marked), env=env)
        assert found.returncode == 0 and json.loads(found.stdout)["watermarked"] is True, found.stderr
        clean = await asyncio.to_thread(run_cli, "detect", "--service", str(unmarked), env=env)
        assert clean.returncode == 1 and "not watermarked" in clean.stdout, clean.stderr
