"""The command line, run as a user would: real processes, the embedded NATS server."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.backends import tone_wav
from tests.support.cli import cli_env, free_port, run_cli, serve_until_sample
from tests.support.helpers import wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient


def test_serve_speaks_a_sample_then_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """The quick start: embedded NATS, Piper loaded, hello.wav spoken through the service."""
    port = free_port()
    out = tmp_path / "not-yet" / "hello.wav"  # serve makes the folder
    env = cli_env(TTS_EMBEDDED_NATS_PORT=str(port), TTS_CACHE_DIR=str(tmp_path / "cache"), TTS_LOG_FORMAT="json")
    proc, events = serve_until_sample("--sample-out", str(out), env=env)
    try:
        written = events[-1]
        assert written["event"] == "sample_written", events[-3:]
        assert written["path"] == str(out) and "tts-actor say" in written["more"]
        info = wav_info(out.read_bytes())
        assert info.channels == 1 and info.duration_s > 2
        # a client command against the running service
        status = run_cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        states = {b["name"]: b["state"] for b in json.loads(status.stdout)["backends"]}
        assert states["piper"] == "loaded" and states["mms"] == "failed"
        said = run_cli("say", "Command line.", "-o", str(tmp_path / "cli.wav"), env=env)
        assert said.returncode == 0, said.stderr
        assert "backend=piper" in said.stdout and wav_info((tmp_path / "cli.wav").read_bytes()).frames > 0
        nowhere = run_cli("say", "Lost.", "-o", str(tmp_path / "missing" / "x.wav"), env=env)
        assert nowhere.returncode == 2 and "no directory" in nowhere.stderr and "Traceback" not in nowhere.stderr
        refused = run_cli("say", "Nope.", "--backend", "xtts", "-o", str(tmp_path / "x.wav"), env=env)
        assert refused.returncode == 2
        assert "backend_failed" in refused.stderr and "pip install -e '.[xtts]'" in refused.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    # the embedded server went with it: the port is free again
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_client_commands_without_a_server_fail_fast_with_a_fix(tmp_path: Path) -> None:
    env = cli_env(NATS_URL=f"nats://127.0.0.1:{free_port()}")
    started = time.perf_counter()
    result = run_cli("status", env=env)
    assert result.returncode == 3
    assert "fix:" in result.stderr
    assert time.perf_counter() - started < 15


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TTS_BACKENDS", "piper,espeak", "espeak"),
        ("TTS_LANGUAGE_PRIORITY", "en=pipr", "pipr"),
        ("TTS_LOG_LEVEL", "bogus", "bogus"),
        ("TTS_PIPER_VOICES_DIR", "/nonexistent/voices", "/nonexistent/voices"),
        ("TTS_MAX_TEXT_CHARS", "many", "many"),
    ],
)
def test_bad_configuration_is_reported(variable: str, value: str, named: str) -> None:
    result = run_cli("status", env=cli_env(**{variable: value}))
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr


async def test_voices_and_unload_commands(piper_loaded: TtsApp, nats_url: str) -> None:
    import asyncio

    env = cli_env(NATS_URL=nats_url)
    voices = await asyncio.to_thread(run_cli, "voices", "--json", env=env)
    assert json.loads(voices.stdout)["backends"]["piper"]["languages"]["en"][0]["id"] == "en_US-joe-medium"
    table = await asyncio.to_thread(run_cli, "voices", env=env)
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["BACKEND", "STATE", "LANGUAGE", "VOICE"], table.stdout
    assert ["piper", "loaded", "en", "en_US-joe-medium"] in [row.split()[:4] for row in rows], table.stdout
    unloaded = await asyncio.to_thread(run_cli, "unload", "piper", env=env)
    assert json.loads(unloaded.stdout)["state"] == "missing"


async def test_voices_reports_the_profiles_made_without_a_consent(
    piper_loaded: TtsApp, nats_url: str, client: TtsClient
) -> None:
    import asyncio

    from tests.support.backends import tone_wav
    from tts_actor.synthesis.profiles import NewProfile

    assert piper_loaded.service is not None
    legacy = await piper_loaded.service.profiles.create(NewProfile(tone_wav(2.0)))  # as stored before consents
    consent = await client.create_consent(tone_wav(1.0), "a speaker", "en-US")
    await client.create_voice(tone_wav(2.0), consent=consent["id"])
    env = cli_env(NATS_URL=nats_url)
    table = (await asyncio.to_thread(run_cli, "voices", env=env)).stdout
    assert "voice profiles: 2 (1 with a consent, 1 without)" in table, table
    unconsented = [line.split()[0] for line in table.splitlines() if line.endswith("unconsented")]
    assert unconsented == [legacy.id[:10] + "…"]
    report = json.loads((await asyncio.to_thread(run_cli, "voices", "--json", env=env)).stdout)["profiles"]
    assert (report["total"], report["consented"], report["require_consent"]) == (2, 1, True)


async def test_say_takes_the_format_from_the_extension_and_streams_to_stdout(
    piper_loaded: TtsApp, nats_url: str, tmp_path: Path
) -> None:
    import asyncio

    from tests.support.audio_checks import decode

    env = cli_env(NATS_URL=nats_url)
    for name, magic in (
        ("reply.opus", b"OggS"),
        ("reply.m4a", b"\0\0\0 ftypM4A "),
        ("reply.webm", b"\x1a\x45\xdf\xa3"),
    ):
        out = tmp_path / name
        said = await asyncio.to_thread(run_cli, "say", "Format from the name.", "-o", str(out), env=env)
        assert said.returncode == 0, said.stderr
        assert out.read_bytes().startswith(magic) and decode(out.read_bytes()).duration_ms > 500
    streamed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tts_actor", "say", "One. Two. Three.", "--stream", "--format", "mp3", "-o", "-"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert streamed.returncode == 0, streamed.stderr
    assert decode(streamed.stdout).duration_ms > 1000  # the bytes on stdout are one MP3 file
    assert b"streamed" in streamed.stderr and b"first audio after" in streamed.stderr


def test_status_says_in_words_when_a_backend_is_loaded_on_no_instance(capsys: pytest.CaptureFixture[str]) -> None:
    from tts_actor.cli.rendering import print_status

    failed = {"instance": "b", "reason": "package_missing", "fix": "pip install torch"}
    fleet = {
        "instances": [{"instance": "a", "backends": []}, {"instance": "b", "backends": []}],
        "backends": {
            "mms": {"loaded": [], "failed": [failed], "other": []},
            "piper": {"loaded": ["a", "b"], "failed": [], "other": []},
        },
    }
    print_status({"instance": "a", "backends": [], "fleet": fleet})
    out = capsys.readouterr().out
    assert "mms         not loaded on any instance" in out and "nowhere" not in out
    assert "piper       loaded on a, b" in out
    assert "failed on b: package_missing; fix: pip install torch" in out


async def test_say_writes_webvtt_subtitles_from_the_word_timings(
    piper_loaded: TtsApp, nats_url: str, tmp_path: Path
) -> None:
    import asyncio
    import re

    env = cli_env(NATS_URL=nats_url)
    text = "Subtitles follow the voice. Each cue is spoken at 9:30 and not before."
    for extra in ([], ["--stream"]):
        vtt = tmp_path / f"said{len(extra)}.vtt"
        args = ("say", text, "-o", str(tmp_path / "said.wav"), "--subtitles", str(vtt), *extra)
        said = await asyncio.to_thread(run_cli, *args, env=env)
        assert said.returncode == 0, said.stderr
        assert "WebVTT, 13 words" in said.stderr, said.stderr
        lines = vtt.read_text(encoding="utf-8").splitlines()
        assert lines[:2] == ["WEBVTT", ""]
        clock = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")
        times = [[int(n) for n in m.groups()] for line in lines if (m := clock.match(line))]
        starts = [((h * 60 + m) * 60 + s) * 1000 + ms for h, m, s, ms, *_ in times]
        ends = [((h * 60 + m) * 60 + s) * 1000 + ms for *_, h, m, s, ms in times]
        assert len(times) == 2 and all(a < b for a, b in zip(starts, ends, strict=True)) and ends[0] <= starts[1]
        cues = [line for line in lines if line and not clock.match(line) and not line.isdigit()][1:]
        assert " ".join(cues) == text
    nowhere = await asyncio.to_thread(
        run_cli, "say", "Lost.", "-o", str(tmp_path / "x.wav"), "--subtitles", str(tmp_path / "no" / "x.vtt"), env=env
    )
    assert nowhere.returncode == 2 and "no directory" in nowhere.stderr


async def test_audit_prints_the_trail_as_json_lines(app: TtsApp, nats_url: str) -> None:
    import asyncio

    assert app.nc is not None and app.service is not None
    client = TtsClient(app.nc, timeout_s=10, retry_policy=None)
    consent = await client.create_consent(tone_wav(2.0), "the speaker", "en")
    created = await client.create_voice(tone_wav(3.0), language="en", consent=consent["id"])
    await client.delete_voice(created["voice_profile"])
    env = cli_env(NATS_URL=nats_url)
    everything = await asyncio.to_thread(run_cli, "audit", env=env)
    assert everything.returncode == 0, everything.stderr
    events = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [(e["action"], e["id"]) for e in events] == [
        ("consent_create", consent["id"]),
        ("voice_create", created["voice_profile"]),
        ("voice_delete", created["voice_profile"]),
    ]
    deletes = await asyncio.to_thread(run_cli, "audit", "--action", "voice_delete", env=env)
    assert [json.loads(line)["action"] for line in deletes.stdout.splitlines()] == ["voice_delete"]
