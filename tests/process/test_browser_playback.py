"""M4A and WebM replies played by headless Chromium: what Safari-less browsers and chat web views do with them.

Runs only where Debian's ``chromium`` is installed (not in CI, which does not install it); the replies
come from the real service and Piper, streamed replies message by message into MediaSource.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, play_in_chromium
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
TEXT = "Your parcel arrives tomorrow morning. Please be at home between nine and noon. Thank you."
MIME = {"m4a": 'audio/mp4; codecs="mp4a.40.2"', "webm": 'audio/webm; codecs="opus"'}


async def test_chromium_plays_m4a_and_webm_whole_and_through_media_source(
    piper_loaded: TtsApp, client: TtsClient, tmp_path: Path
) -> None:
    files, durations, streamed = {}, {}, {}
    for fmt in ("m4a", "webm"):
        reply = await client.synthesize(SynthesisRequest(text=TEXT, format=AudioFormat(fmt), cache=False))
        (tmp_path / f"whole.{fmt}").write_bytes(reply.audio)
        durations[fmt] = reply.duration_ms
        parts = []
        stream = client.stream(SynthesisRequest(text=TEXT, format=AudioFormat(fmt), cache=False))
        async for chunk in stream:
            parts.append(f"part{len(parts)}.{fmt}")  # each message as it arrived: MediaSource appends them in turn
            (tmp_path / parts[-1]).write_bytes(chunk.data)
        streamed[fmt] = int(stream.end_headers["Tts-Duration-Ms"])  # its own synthesis: Piper varies a little
        files[fmt] = {"whole": f"whole.{fmt}", "parts": parts, "mime": MIME[fmt]}
    played = play_in_chromium(tmp_path, files)
    aac_frame_ms = 1024 / 22.05  # one AAC frame at Piper's 22050 Hz
    for fmt, result in played.items():
        expected = durations[fmt]
        # <audio> shows the whole file's real length before playing: MP4's edit list, WebM's Duration
        assert abs(result["whole"]["duration_ms"] - expected) <= 30, (fmt, result)
        # decoded: WebM exactly (CodecDelay, DiscardPadding); MP4's priming skipped, its last AAC frame whole
        late = result["decoded"]["duration_ms"] - expected
        assert -30 <= late <= (aac_frame_ms + 30 if fmt == "m4a" else 30), (fmt, result)
        # the stream, message by message into MediaSource: one buffered range from 0 to about the end
        mse = result["mse"]
        assert mse.get("ranges") == 1 and mse["start_ms"] < 30, (fmt, result)
        late = mse["end_ms"] - streamed[fmt]  # a buffered range ends on a whole AAC frame or 20 ms Opus block
        assert -30 <= late <= (aac_frame_ms if fmt == "m4a" else 20) + 30, (fmt, result)
