"""Piper's memory stays flat whatever the punctuation: the service process, the real voice, long texts.

Piper's memory grows with the length of what one engine call is given (about 0.85 MB a
character without punctuation), so before segmenting 5,000 unpunctuated characters took a
service past 8 GB. Each text here is spoken by a fresh ``tts-actor serve`` process, whose
peak (VmHWM) and resident memory after the reply (VmRSS) are read from /proc.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client

from tests.support.cli import cli_env
from tests.support.helpers import eventually
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WORDS = (
    "the translator sent this sentence so that the speech service could read it aloud to every listener "
    "in the room today while the weather outside stayed calm and the meeting went on as planned"
).split()


def english(chars: int, punctuated: bool) -> str:
    words, n = [], 0
    while n < chars - 12:
        word = WORDS[len(words) % len(WORDS)]
        if punctuated and len(words) % 14 == 13:
            word += "."
        words.append(word)
        n += len(word) + 1
    text = " ".join(words)
    return (text[0].upper() + text[1:] + ".") if punctuated else text


def chinese(chars: int) -> str:
    base = "我们今天在会议室里讨论了翻译服务的语音合成问题大家都觉得效果很好"
    return (base * (chars // len(base) + 1))[:chars]


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


async def speak_in_a_fresh_service(nats_url: str, nc: Client, tmp_path: Path, text: str, language: str) -> dict:
    env = cli_env(
        NATS_URL=nats_url,
        TTS_BACKENDS="piper",
        TTS_CACHE_DIR=str(tmp_path / "cache"),
        TTS_SYNTHESIS_TIMEOUT_S="600",
        TTS_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tts_actor", "serve", env=env, stdout=subprocess.DEVNULL
    )
    client = TtsClient(nc, timeout_s=600)
    try:

        async def loaded() -> bool:
            try:
                return (await client.health())["loaded"] == ["piper"]
            except Exception:
                return False

        # test-side sync on another process's start-up: loaded, and its endpoints answering
        await eventually(loaded, timeout_s=30, interval_s=0.1, explain=lambda: "the service did not load piper")
        before = memory_mb(proc.pid)
        reply = await client.synthesize(SynthesisRequest(text=text, language="en", format=AudioFormat.OPUS))
        after = memory_mb(proc.pid)
        assert reply.duration_ms > 10_000
        return {
            "loaded_mb": before["VmRSS"],
            "peak_mb": after["VmHWM"],
            "after_mb": after["VmRSS"],
            "language": language,
        }
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def test_unpunctuated_and_foreign_script_texts_keep_piper_flat(nats_url: str, nc: Client, tmp_path: Path) -> None:
    punctuated = await speak_in_a_fresh_service(nats_url, nc, tmp_path, english(5000, True), "en")
    unpunctuated = await speak_in_a_fresh_service(nats_url, nc, tmp_path, english(5000, False), "en")
    han_as_english = await speak_in_a_fresh_service(nats_url, nc, tmp_path, chinese(1000), "en")
    baseline = punctuated["peak_mb"]
    report = f"punctuated {punctuated}, unpunctuated {unpunctuated}, chinese as en {han_as_english}"
    print(report)
    assert unpunctuated["peak_mb"] <= 1.5 * baseline, report
    assert han_as_english["peak_mb"] <= 1.5 * baseline, report
    for run in (unpunctuated, han_as_english):  # nothing kept at the peak afterwards either
        assert run["after_mb"] <= 1.5 * baseline, report


def test_the_unpunctuated_text_is_one_sentence_and_long() -> None:
    assert "." not in english(5000, False) and 4900 < len(english(5000, False)) <= 5000
    assert english(5000, True).count(".") > 50
    assert len(chinese(1000)) == 1000 and "。" not in chinese(1000)
