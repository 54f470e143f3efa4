"""``make bench`` (second part): the inaudible watermark, measured on real Piper speech (joe) in one run.

(w1) detection after each codec at its default bitrate, 20 marked sentences; (w2) false positives on the same 20
sentences unmarked; (w3) the mark's cost beside Piper's synthesis of the same sentences; (w4) first audio and whole
reply through the service with the mark on and off, interleaved. No assertions: numbers to compare between commits.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.speech import TWENTY_SENTENCES, joe, speak
from tts_actor.app import TtsApp
from tts_actor.audio import watermark
from tts_actor.audio.codecs import encode_whole
from tts_actor.audio.formats import FORMATS
from tts_actor.audio.pcm import Audio
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.nats_edge.connection import connect
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.observability.logs import setup_logging
from tts_actor.synthesis.marking import Marking
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

CODECS = ("wav", "flac", "mp3", "aac", "opus")
FIRST_AUDIO_RUNS = 7
TEN_SENTENCES = " ".join(TWENTY_SENTENCES[:10])


def bitrate(fmt: str) -> str:
    rate = FORMATS[fmt].default_bitrate
    return f"{rate // 1000} kbit/s" if rate else "lossless"


async def detection_rows(clean: list[Audio], marked: list[Audio]) -> list[str]:
    rows = []
    for fmt in CODECS:
        hits = [await watermark.detect_file_async(encode_whole(fmt, a.pcm, a.sample_rate)) for a in marked]
        false = [await watermark.detect_file_async(encode_whole(fmt, a.pcm, a.sample_rate)) for a in clean]
        found = sum(d.watermarked for d in hits)
        wrong = sum(d.watermarked for d in false)
        rows.append(
            f"(w1/w2) {fmt:<5} {bitrate(fmt):<10} detected {found:>2}/{len(hits)} "
            f"(confidence min {min(d.confidence for d in hits):.3f}, median "
            f"{statistics.median(d.confidence for d in hits):.3f}); unmarked flagged {wrong:>2}/{len(false)} "
            f"(confidence max {max(d.confidence for d in false):.3f}, median "
            f"{statistics.median(d.confidence for d in false):.3f})"
        )
    return rows


async def cost_rows() -> tuple[list[str], list[Audio], list[Audio]]:
    """Marking and detection as the service runs them: on their own threads, torch on one core."""
    await watermark.mark_async(await asyncio.to_thread(speak, "Warm up."))
    clean, marked, synth_s, mark_s = [], [], [], []
    for text in TWENTY_SENTENCES:
        started = time.perf_counter()
        audio = await asyncio.to_thread(speak, text)
        synth_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        marked.append(await watermark.mark_async(audio))
        mark_s.append(time.perf_counter() - started)
        clean.append(audio)
    audio_s = sum(a.duration_s for a in clean)
    sample = encode_whole("opus", marked[2].pcm, marked[2].sample_rate)
    detect_s = []
    for _ in range(5):
        started = time.perf_counter()
        await watermark.detect_file_async(sample)
        detect_s.append(time.perf_counter() - started)
    rows = [
        f"(w3) Piper synthesis, 20 sentences: {sum(synth_s) * 1000:.0f} ms for {audio_s:.1f} s of audio "
        f"(RTF {sum(synth_s) / audio_s:.3f})",
        f"(w3) watermark, same 20 sentences: {sum(mark_s) * 1000:.0f} ms (RTF {sum(mark_s) / audio_s:.3f}) = "
        f"{sum(mark_s) / sum(synth_s) * 100:.1f} % of synthesis time; per sentence median "
        f"{statistics.median(mark_s) * 1000:.1f} ms vs synthesis {statistics.median(synth_s) * 1000:.1f} ms",
        f"(w3) detect one {marked[2].duration_s:.1f} s opus file: median {statistics.median(detect_s) * 1000:.1f} ms",
    ]
    return rows, clean, marked


async def first_audio_rows(url: str, cache: Path) -> list[str]:
    settings = load_settings({}).with_(nats_url=url, backends=("piper",), cache_dir=cache, watermark="on")
    app = TtsApp(settings)
    await app.start()
    nc = await connect(url, "bench-watermark", reconnect=False)
    try:
        assert app.registry is not None and app.service is not None
        await app.registry.actors["piper"].wait_settled(30)
        pipeline = app.service.pipeline
        modes = {"on": Marking("on"), "off": Marking("off")}
        client = TtsClient(nc, timeout_s=60)
        first: dict[str, list[float]] = {"on": [], "off": []}
        whole: dict[str, list[float]] = {"on": [], "off": []}
        request = SynthesisRequest(text=TEN_SENTENCES, format=AudioFormat.OPUS, cache=False)
        for run in range(FIRST_AUDIO_RUNS + 1):  # alternated; the first round warms both paths up
            for mode, marking in modes.items():
                pipeline.marking = marking
                started = time.perf_counter()
                async with client.stream(request) as chunks:
                    async for _ in chunks:
                        if run:
                            first[mode].append(time.perf_counter() - started)
                        break
                started = time.perf_counter()
                await client.synthesize(request)
                if run:
                    whole[mode].append(time.perf_counter() - started)
        f_on, f_off, w_on, w_off = (statistics.median(x) * 1000 for x in (first["on"], first["off"], *whole.values()))
        return [
            f"(w4) 10 sentences, opus, streamed: first audio {f_on:.1f} ms marked vs {f_off:.1f} ms unmarked "
            f"({f_on - f_off:+.1f} ms), n={FIRST_AUDIO_RUNS} each, interleaved",
            f"(w4) 10 sentences, opus, whole reply: {w_on:.1f} ms marked vs {w_off:.1f} ms unmarked "
            f"({(w_on / w_off - 1) * 100:+.1f} %)",
        ]
    finally:
        await nc.close()
        await app.stop()


async def main() -> None:
    setup_logging("error")
    started = time.perf_counter()
    joe()
    rows, clean, marked = await cost_rows()
    rows = await detection_rows(clean, marked) + rows
    with tempfile.TemporaryDirectory(prefix="tts-bench-wm-") as tmp:
        server = EmbeddedNatsServer(Path(tmp) / "nats", port=-1)
        url = await asyncio.to_thread(server.start)
        try:
            rows += await first_audio_rows(url, Path(tmp))
        finally:
            await asyncio.to_thread(server.stop)
    print("\n".join(rows))
    print(f"watermark bench took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
