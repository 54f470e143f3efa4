"""``make bench``: what the service costs over bare NATS and over Piper itself.

Runs a real nats-server and the service in-process (piper + chatterbox, whose
packages are missing here, so it fails at once), then prints latencies. No
assertions: numbers to compare between commits and hosts, on the same machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from statemachine import State, StateEvent
from tests.support.bench_pressure import pressure_rows
from tts_actor.app import TtsApp
from tts_actor.audio.codecs import open_encoder
from tts_actor.audio.segmenter import segment_text
from tts_actor.audio.waveform import DEFAULT_POINTS, Waveform
from tts_actor.backends.piper import discover_voices
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import load_settings
from tts_actor.nats_edge.connection import connect
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.observability.logs import setup_logging
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import AudioFormat, SynthesisRequest, Timings

ROUND_TRIPS = 2000
WARMUP = 100
SYNTH_RUNS = 10
CONCURRENT_CALLERS = 8
CALLS_EACH = 3
MISSING_BACKEND = "chatterbox"
SENTENCE = (
    "The quick brown fox jumps over the lazy dog while the translator waits patiently for every spoken word to arrive."
)
LONG_TEXT = " ".join(
    [
        "Speech synthesis turns written language into sound, one sentence after another, and the service sends it "
        "back over NATS in pieces small enough for the server to carry."
    ]
    * 18
)


TEN_SENTENCES = " ".join(
    f"Sentence number {n} of the reply tells the listener one more small thing about the weather today."
    for n in range(1, 11)
)
FIRST_AUDIO_RUNS = 5
CACHE_HIT_RUNS = 200
COALESCE_RUNS = 5
WORD_TIMING_RUNS = 15  # 5 could not tell a 50 ms difference from a busy host's noise


@dataclass(frozen=True)
class Row:
    measure: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_requests(send: Callable[[], Awaitable[object]], count: int = ROUND_TRIPS) -> list[float]:
    """Sequential round trips, in milliseconds, after a warm-up."""
    for _ in range(WARMUP):
        await send()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await send()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def latency_row(measure: str, samples: list[float], baseline: list[float] | None = None) -> Row:
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    note = f"n={len(samples)}"
    if baseline:
        note += f", {p50 / percentile(baseline, 0.5):.1f}x / {p99 / percentile(baseline, 0.99):.1f}x bare NATS"
    return Row(measure, p50, p99, note)


async def bare_nats_baseline(url: str) -> list[float]:
    nc = await connect(url, "bench-echo", reconnect=False)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("bench.echo", cb=echo)
    try:
        return await timed_requests(lambda: nc.request("bench.echo", b"x" * 64, timeout=2))
    finally:
        await nc.close()


async def status_vs_health_rows(nc: Any, baseline: list[float]) -> list[Row]:
    """(c) tts.status (the fleet from the live KV copy) against tts.health (local only), in the same run."""
    health = await timed_requests(lambda: nc.request("tts.health", b"", timeout=2))
    status = await timed_requests(lambda: nc.request("tts.status", b"", timeout=2))
    ratio = percentile(status, 0.5) / percentile(health, 0.5)
    row = latency_row("(c) tts.status", status, baseline)
    return [
        latency_row("(c) tts.health", health, baseline),
        Row(row.measure, row.p50_ms, row.p99_ms, f"{row.note}, {ratio:.1f}x tts.health p50 (target <= 2x)"),
    ]


async def start_service(url: str, cache: Path) -> tuple[TtsApp, dict[str, float]]:
    """Start the app; returns it and seconds from start() to each backend's settling event on NATS."""
    watcher = await connect(url, "bench-watch", reconnect=False)
    loop = asyncio.get_running_loop()
    settled = {"piper": loop.create_future(), MISSING_BACKEND: loop.create_future()}

    async def on_state(msg: Msg) -> None:
        event = StateEvent.from_dict(json.loads(msg.data))
        future = settled.get(event.backend)
        if future is not None and not future.done() and event.to_state in (State.LOADED, State.FAILED):
            future.set_result((time.perf_counter(), event.to_state))

    await watcher.subscribe("tts.state.>", cb=on_state)
    await watcher.flush()
    settings = load_settings({}).with_(nats_url=url, backends=("piper", MISSING_BACKEND), cache_dir=cache)
    app = TtsApp(settings)
    started = time.perf_counter()
    await app.start()
    start_returned = time.perf_counter() - started
    await asyncio.wait_for(asyncio.gather(*settled.values()), 30)
    await watcher.close()
    times = {name: fut.result()[0] - started for name, fut in settled.items()}
    states = {name: fut.result()[1] for name, fut in settled.items()}
    if states["piper"] is not State.LOADED:
        raise SystemExit(f"piper did not load ({states['piper'].value}): run `tts-actor doctor`")
    labels = {"piper": "piper loaded", MISSING_BACKEND: f"{MISSING_BACKEND} failed (package missing)"}
    return app, {"start() returned": start_returned, **{labels[name]: t for name, t in times.items()}}


def load_direct_piper() -> object:
    """A second PiperVoice in this process, used without the service."""
    from piper import PiperVoice

    voice_files = discover_voices(None)[0]
    return PiperVoice.load(voice_files.model, config_path=voice_files.config)


def direct_piper_once(voice: object, text: str) -> tuple[float, float]:
    """(compute seconds, audio seconds) of one PiperVoice.synthesize."""
    started = time.perf_counter()
    pcm_bytes = sum(len(chunk.audio_int16_bytes) for chunk in voice.synthesize(text))  # type: ignore[attr-defined]
    return time.perf_counter() - started, pcm_bytes / 2 / voice.config.sample_rate  # type: ignore[attr-defined]


async def service_once(client: TtsClient, text: str) -> tuple[float, float]:
    """(round-trip seconds, audio seconds) of one synthesis through the service."""
    started = time.perf_counter()
    reply = await client.synthesize(SynthesisRequest(text=text, cache=False))
    return time.perf_counter() - started, reply.duration_ms / 1000


async def side_by_side(client: TtsClient, text: str, runs: int) -> tuple[list[tuple[float, float]], ...]:
    """Alternate direct and served runs so that drift on a busy host hits both alike."""
    voice = await asyncio.to_thread(load_direct_piper)
    await asyncio.to_thread(direct_piper_once, voice, text)  # warm-up
    await service_once(client, text)
    direct, served = [], []
    for _ in range(runs):
        direct.append(await asyncio.to_thread(direct_piper_once, voice, text))
        served.append(await service_once(client, text))
    return direct, served


async def bench(url: str, cache: Path) -> list[Row]:
    rows: list[Row] = []
    baseline = await bare_nats_baseline(url)
    rows.append(latency_row("(a) bare NATS request-reply (64 B echo)", baseline))

    app, startup = await start_service(url, cache)
    nc = await connect(url, "bench-client", reconnect=False)
    client = TtsClient(nc)
    try:
        not_ready = SynthesisRequest(text="Hello.", backend=MISSING_BACKEND).to_json()

        async def ask_failed_backend() -> None:
            reply = await nc.request("tts.synthesize", not_ready, timeout=2)
            if Header.ERROR_CODE.value not in (reply.headers or {}):  # a guard that (b) measures what it says
                raise RuntimeError(f"{MISSING_BACKEND} answered with audio: it is installed here")

        not_ready_ms = await timed_requests(ask_failed_backend)
        rows.append(latency_row("(b) synthesize -> not-ready reply", not_ready_ms, baseline))
        rows.extend(await status_vs_health_rows(nc, baseline))

        for name, seconds in sorted(startup.items(), key=lambda item: item[1]):
            note = "" if name.startswith("start()") else "from start() to its settling event on tts.state.*"
            rows.append(Row(f"(d) start-up: {name}", seconds * 1000, note=note))

        direct, served = await side_by_side(client, SENTENCE, SYNTH_RUNS)
        d50, s50 = (statistics.median(t for t, _ in runs) for runs in (direct, served))
        d_rtf, s_rtf = (statistics.median(t / a for t, a in runs) for runs in (direct, served))
        words = len(SENTENCE.split())
        audio = statistics.median(a for _, a in direct)
        direct_note = f"RTF {d_rtf:.3f}, ~{audio:.1f} s audio"
        rows.append(Row(f"(e) {words} words, direct PiperVoice", d50 * 1000, note=direct_note))
        rows.append(
            Row(
                f"(e) {words} words, through the service",
                s50 * 1000,
                note=f"RTF {s_rtf:.3f}, {s50 / d50:.2f}x direct ({(s50 - d50) * 1000:+.1f} ms), n={SYNTH_RUNS} each",
            )
        )

        started = time.perf_counter()
        reply = await client.synthesize(SynthesisRequest(text=LONG_TEXT, cache=False), timeout_s=80)
        elapsed = time.perf_counter() - started
        rows.append(
            Row(
                f"(f) {len(LONG_TEXT)} chars, chunked reply",
                elapsed * 1000,
                note=f"{len(reply.audio) / 2**20:.2f} MiB in {reply.chunks} chunks, "
                f"{reply.duration_ms / 1000:.1f} s audio, RTF {elapsed / (reply.duration_ms / 1000):.3f}",
            )
        )
        rows.extend(await first_audio_rows(client))
        rows.extend(await asyncio.to_thread(codec_rows))
        rows.extend(await concurrency_rows(client, nc, not_ready))
        rows.append(await throughput_row(client))
        rows.extend(await cache_hit_rows(app, client, nc))
        rows.extend(await coalescing_rows(client))
        rows.extend(await word_timing_rows(client))
        rows.extend(await asyncio.to_thread(alignment_load_rows))
        rows.extend(await pressure_rows(app, client, nc, Row, latency_row, baseline))
    finally:
        await nc.close()
        await app.stop()
    return rows


async def first_audio_rows(client: TtsClient) -> list[Row]:
    """(i) a 10-sentence text: first audio streamed vs the whole reply, vs Piper on the first segment alone."""
    voice = await asyncio.to_thread(load_direct_piper)
    first_segment = segment_text(TEN_SENTENCES, 200)[0].text
    await asyncio.to_thread(direct_piper_once, voice, first_segment)  # warm-up
    direct, streamed, whole = [], [], []
    for _ in range(FIRST_AUDIO_RUNS):  # alternated, so that drift hits all three alike
        direct.append((await asyncio.to_thread(direct_piper_once, voice, first_segment))[0])
        started = time.perf_counter()
        async with client.stream(SynthesisRequest(text=TEN_SENTENCES, format=AudioFormat.OPUS, cache=False)) as chunks:
            async for _ in chunks:
                streamed.append(time.perf_counter() - started)
                break
        started = time.perf_counter()
        await client.synthesize(SynthesisRequest(text=TEN_SENTENCES, format=AudioFormat.OPUS, cache=False))
        whole.append(time.perf_counter() - started)
    d, st, wh = (statistics.median(x) * 1000 for x in (direct, streamed, whole))
    return [
        Row("(i) 10 sentences: Piper on the first segment alone", d, note=f"n={FIRST_AUDIO_RUNS}, the aim's baseline"),
        Row(
            "(i) 10 sentences, opus: first audio, streamed",
            st,
            note=f"{st - d:+.1f} ms over the first segment's synthesis (aim: under +20 ms)",
        ),
        Row("(i) 10 sentences, opus: whole reply", wh, note=f"streaming's first audio is {wh / st:.1f}x sooner"),
    ]


def codec_rows() -> list[Row]:
    """(j) encoding each format segment by segment into a whole reply, as a share of Piper's synthesis time for the
    same text, beside WAV's cost (and m4a and webm beside aac and opus, the same codecs in other containers)."""
    voice = load_direct_piper()
    segments = [seg.text for seg in segment_text(TEN_SENTENCES, 200)]
    synth_s, pcm_parts = 0.0, []
    for text in segments:
        started = time.perf_counter()
        pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))  # type: ignore[attr-defined]
        synth_s += time.perf_counter() - started
        pcm_parts.append(pcm)
    rate = voice.config.sample_rate  # type: ignore[attr-defined]
    audio_s = sum(len(p) for p in pcm_parts) / 2 / rate
    rows = [Row("(j) Piper synthesis of the 10 sentences", synth_s * 1000, note=f"{audio_s:.1f} s of audio")]
    spent: dict[AudioFormat, float] = {}
    siblings = {AudioFormat.M4A: AudioFormat.AAC, AudioFormat.WEBM: AudioFormat.OPUS}  # same codec, other container
    for fmt in AudioFormat:  # wav first: the baseline every other row is read against
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            encoder = open_encoder(fmt.value, rate)
            outputs = [encoder.encode(pcm) for pcm in pcm_parts] + [encoder.finish()]
            size = len(encoder.finish_whole(b"".join(outputs)))  # as a whole reply: m4a and webm rewrite their head
            timings.append(time.perf_counter() - started)
        encode_s = spent[fmt] = statistics.median(timings)
        kbits = size * 8 / audio_s / 1000
        note = f"{encode_s / synth_s * 100:.2f} % of synthesis time, {size / 1024:.0f} KiB, {kbits:.0f} kbit/s"
        if fmt is not AudioFormat.WAV:
            note += f", {(encode_s - spent[AudioFormat.WAV]) * 1000:+.0f} ms over wav"
        if fmt in siblings:
            note += f", {encode_s / spent[siblings[fmt]]:.2f}x {siblings[fmt].value} (same codec)"
        rows.append(Row(f"(j) encode {fmt.value} ({encoder.sample_rate} Hz)", encode_s * 1000, note=note))
    timings = []
    for _ in range(3):  # what every reply adds on the way through: the waveform's peaks, no second decode
        started = time.perf_counter()
        wave = Waveform()
        for pcm in pcm_parts:
            wave.add(pcm)
        wave.points(DEFAULT_POINTS)
        timings.append(time.perf_counter() - started)
    wave_s = statistics.median(timings)
    rows.append(
        Row(
            "(j) waveform (Tts-Waveform) of the same audio",
            wave_s * 1000,
            note=f"{wave_s / synth_s * 100:.3f} % of synthesis time, {wave_s / spent[AudioFormat.WAV]:.2f}x wav's",
        )
    )
    return rows


async def concurrency_rows(client: TtsClient, nc: object, not_ready: bytes) -> list[Row]:
    """(g) many callers at once against serial; (h) replies while Piper is busy with a long text."""
    text = "Please hold the line, the next speaker starts soon."
    serial: list[float] = []
    started = time.perf_counter()
    for _ in range(CONCURRENT_CALLERS * CALLS_EACH):
        began = time.perf_counter()
        await client.synthesize(SynthesisRequest(text=text, cache=False))
        serial.append((time.perf_counter() - began) * 1000)
    serial_rate = len(serial) / (time.perf_counter() - started)

    async def caller() -> list[float]:
        latencies = []
        for _ in range(CALLS_EACH):
            began = time.perf_counter()
            await client.synthesize(SynthesisRequest(text=text, cache=False))
            latencies.append((time.perf_counter() - began) * 1000)
        return latencies

    started = time.perf_counter()
    results = await asyncio.gather(*(caller() for _ in range(CONCURRENT_CALLERS)))
    concurrent_rate = CONCURRENT_CALLERS * CALLS_EACH / (time.perf_counter() - started)
    concurrent = [ms for latencies in results for ms in latencies]

    long_job = asyncio.create_task(client.synthesize(SynthesisRequest(text=LONG_TEXT, cache=False), timeout_s=80))
    await asyncio.sleep(0.5)  # let the long synthesis get going on Piper's worker

    async def ask_failed_backend() -> None:
        await nc.request("tts.synthesize", not_ready, timeout=2)  # type: ignore[attr-defined]

    busy_not_ready = await timed_requests(ask_failed_backend, count=500)
    still_running = not long_job.done()
    await long_job
    return [
        latency_row(f"(g) {len(serial)} short requests, one caller", serial),
        Row(
            f"(g) same, {CONCURRENT_CALLERS} callers at once",
            percentile(concurrent, 0.5),
            percentile(concurrent, 0.99),
            f"{concurrent_rate:.1f} req/s vs {serial_rate:.1f} serial ({concurrent_rate / serial_rate:.2f}x); "
            "one worker per backend queues them",
        ),
        Row(
            "(h) not-ready reply while Piper speaks a long text",
            percentile(busy_not_ready, 0.5),
            percentile(busy_not_ready, 0.99),
            f"n=500, Piper still busy at the end: {still_running}; compare with (b)",
        ),
    ]


THROUGHPUT_SENTENCES = [
    "The weather today is mild, with a light breeze from the west.",
    "Our train leaves the station at half past nine in the morning.",
    "Please remember to bring your ticket and a valid form of identification.",
    "The museum opens its new exhibition on modern painting next week.",
    "Fresh bread is baked every morning in the little shop on the corner.",
    "A translator turns every message into speech for the people listening.",
]


async def throughput_row(client: TtsClient) -> Row:
    """(k) audio seconds made per wall second: 8 callers through the service against Piper in a loop, same text."""
    voice = await asyncio.to_thread(load_direct_piper)
    texts = THROUGHPUT_SENTENCES * (CONCURRENT_CALLERS * CALLS_EACH // len(THROUGHPUT_SENTENCES))

    def direct_loop() -> float:
        started = time.perf_counter()
        audio = sum(direct_piper_once(voice, text)[1] for text in texts)
        return audio / (time.perf_counter() - started)

    async def served() -> float:
        mine = [texts[i::CONCURRENT_CALLERS] for i in range(CONCURRENT_CALLERS)]

        async def caller(share: list[str]) -> float:
            return sum([(await service_once(client, text))[1] for text in share])

        started = time.perf_counter()
        audio = sum(await asyncio.gather(*(caller(share) for share in mine)))
        return audio / (time.perf_counter() - started)

    await asyncio.to_thread(direct_piper_once, voice, texts[0])  # warm-up, both sides
    await service_once(client, texts[0])
    direct_rates, served_rates = [], []
    for _ in range(2):  # alternated, so that drift on a busy host hits both alike
        direct_rates.append(await asyncio.to_thread(direct_loop))
        served_rates.append(await served())
    direct_rate, served_rate = statistics.mean(direct_rates), statistics.mean(served_rates)
    return Row(
        f"(k) throughput, {CONCURRENT_CALLERS} callers vs direct Piper loop",
        note=f"{served_rate:.2f} vs {direct_rate:.2f} audio s per s: ratio {served_rate / direct_rate:.3f} "
        f"(aim >= 0.95); {len(texts)} sentences a run, 2 runs each, TTS_PIPER_WORKERS=1",
    )


async def cache_hit_rows(app: TtsApp, client: TtsClient, nc: Any) -> list[Row]:
    """(k) a cache hit against a bare request-reply carrying a reply of the same size, interleaved: first with
    the in-memory copies off (every hit read from the object store: what a hit cost before them), then on."""
    request = SynthesisRequest(text=SENTENCE)
    first = await client.synthesize(request)  # a miss; the store runs in the background
    assert app.service is not None
    await app.service.cached.drain(10)
    memory = app.service.cached.cache.memory
    body = b"x" * len(first.audio)

    async def sized(msg: Msg) -> None:
        await msg.respond(body)

    sub = await nc.subscribe("bench.sized", cb=sized)
    size = f"{len(body) / 1024:.0f} KiB"
    rows: list[Row] = []
    bound = memory.max_bytes
    try:
        for where, max_bytes in (("the object store", 0), ("memory", bound)):
            memory.max_bytes = max_bytes
            memory.clear()
            hits, bare = await _hits_beside_bare(client, request, nc)
            rows.append(latency_row(f"(k) bare NATS request-reply, {size} reply (beside the next row)", bare))
            rows.append(latency_row(f"(k) synthesize, audio cache hit from {where} ({size} WAV)", hits, bare))
    finally:
        memory.max_bytes = bound
        await sub.unsubscribe()
    return rows


async def _hits_beside_bare(client: TtsClient, request: SynthesisRequest, nc: Any) -> tuple[list[float], list[float]]:
    hits: list[float] = []
    bare: list[float] = []
    for round_ in range(WARMUP // 10 + CACHE_HIT_RUNS):
        began = time.perf_counter()
        reply = await client.synthesize(request)
        hit_ms = (time.perf_counter() - began) * 1000
        if reply.headers.get(Header.CACHE.value) != "hit":
            raise RuntimeError(f"expected a cache hit, got {reply.headers.get(Header.CACHE.value)}")
        began = time.perf_counter()
        await nc.request("bench.sized", b"", timeout=2)
        bare_ms = (time.perf_counter() - began) * 1000
        if round_ >= WARMUP // 10:
            hits.append(hit_ms)
            bare.append(bare_ms)
    return hits, bare


async def coalescing_rows(client: TtsClient) -> list[Row]:
    """(l) 10 identical requests at once (each round a new text: a miss) against one request alone, alternated."""
    single: list[float] = []
    burst: list[float] = []
    spoken: list[float] = []
    for run in range(COALESCE_RUNS):
        began = time.perf_counter()
        one = await client.synthesize(SynthesisRequest(text=f"{SENTENCE} Alone, round {run}."))
        single.append((time.perf_counter() - began) * 1000)
        request = SynthesisRequest(text=f"{SENTENCE} Together, round {run}.")
        before = audio_seconds_total()
        began = time.perf_counter()
        replies = await asyncio.gather(*(client.synthesize(request) for _ in range(10)))
        burst.append((time.perf_counter() - began) * 1000)
        spoken.append((audio_seconds_total() - before) / (replies[0].duration_ms / 1000))
        if len({r.audio for r in replies}) != 1 or one.duration_ms <= 0:
            raise RuntimeError("the burst's callers got different audio")
    single_row = latency_row("(l) one request, cache miss", single)
    burst_row = latency_row("(l) 10 identical requests at once, coalesced (until the last reply)", burst)
    note = f"{burst_row.note}, {statistics.median(burst) / statistics.median(single):.2f}x one request"
    note += f"; the engine spoke {max(spoken):.2f}x one reply (at most, over {COALESCE_RUNS} bursts)"
    return [single_row, Row(burst_row.measure, burst_row.p50_ms, burst_row.p99_ms, note)]


def audio_seconds_total() -> float:
    return REGISTRY.get_sample_value("tts_audio_seconds_total", {"backend": "piper"}) or 0.0


async def word_timing_rows(client: TtsClient) -> list[Row]:
    """(w) the same 10 sentences with timings=word against timings=segment, alternated: whole WAV and first audio.

    The service runs in this process, so ``process_time`` over a request is its CPU (engine, mapping, encoding).
    """
    runs: dict[Timings, dict[str, list[float]]] = {mode: {"wall": [], "cpu": [], "first": []} for mode in Timings}
    count = 0
    for round_ in range(1 + WORD_TIMING_RUNS):  # the first round warms up both
        for mode in (Timings.SEGMENT, Timings.WORD) if round_ % 2 else (Timings.WORD, Timings.SEGMENT):
            request = SynthesisRequest(text=TEN_SENTENCES, cache=False, timings=mode)
            wall, cpu = time.perf_counter(), time.process_time()
            reply = await client.synthesize(request, timeout_s=120)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            count = sum(len(t.get("words", ())) for t in reply.timings) or count
            started = time.perf_counter()
            first = 0.0
            # read to the end: a stream cut after its first audio leaves its segment running, and the next
            # request would wait for it
            async for _ in client.stream(dataclasses.replace(request, format=AudioFormat.OPUS), timeout_s=120):
                first = first or time.perf_counter() - started
            if round_:
                runs[mode]["wall"].append(wall)
                runs[mode]["cpu"].append(cpu)
                runs[mode]["first"].append(first)
    (p, pc, pf), (w, wc, wf) = (
        [statistics.median(runs[mode][key]) * 1000 for key in ("wall", "cpu", "first")] for mode in Timings
    )
    note = f"n={WORD_TIMING_RUNS} each, alternated"
    return [
        Row("(w) 10 sentences, wav whole: timings=segment", p, note=f"{note}, CPU {pc:.0f} ms"),
        Row(
            "(w) 10 sentences, wav whole: timings=word",
            w,
            note=f"{(w / p - 1) * 100:+.1f} % wall, CPU {wc:.0f} ms ({(wc / pc - 1) * 100:+.1f} %), {count} words",
        ),
        Row("(w) 10 sentences, opus first audio: timings=segment", pf, note=note),
        Row("(w) 10 sentences, opus first audio: timings=word", wf, note=f"{wf - pf:+.1f} ms"),
    ]


def alignment_load_rows() -> list[Row]:
    """(w) Piper patched for alignments against the model file as it is: load, and the default path's synthesis.

    Wall and CPU time (``process_time``: every thread of ONNX Runtime's pool): on a shared host wall time drifts.
    """
    from piper import PiperVoice

    from tts_actor.backends.piper import _load_voice, _model_bytes

    files = discover_voices(None)[0]
    voices: dict[str, Any] = {}
    loads: dict[str, list[tuple[float, float]]] = {"plain": [], "patched": []}
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        voices["plain"] = PiperVoice.load(files.model, config_path=files.config)
        loads["plain"].append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        voices["patched"] = _load_voice(files, 1, _model_bytes(files)[0])
        loads["patched"].append((time.perf_counter() - wall, time.process_time() - cpu))
    synth: dict[str, list[tuple[float, float]]] = {"plain": [], "patched": []}
    for voice in voices.values():  # warm-up
        direct_piper_once(voice, SENTENCE)
    for run in range(2 * SYNTH_RUNS):  # alternated, the order flipped each round
        for name in ("plain", "patched") if run % 2 else ("patched", "plain"):
            wall, cpu = time.perf_counter(), time.process_time()
            direct_piper_once(voices[name], SENTENCE)
            synth[name].append((time.perf_counter() - wall, time.process_time() - cpu))

    def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(w for w, _ in runs) * 1000, statistics.median(c for _, c in runs) * 1000

    (lp, lpc), (lw, lwc) = medians(loads["plain"]), medians(loads["patched"])
    (sp, spc), (sw, swc) = medians(synth["plain"]), medians(synth["patched"])
    words = len(SENTENCE.split())
    return [
        Row("(w) Piper voice load: model file as it is", lp, note=f"n=3, CPU {lpc:.0f} ms"),
        Row("(w) Piper voice load: patched for alignments", lw, note=f"{lw - lp:+.0f} ms, CPU {lwc - lpc:+.0f} ms"),
        Row(f"(w) {words} words, default path: plain model", sp, note=f"n={2 * SYNTH_RUNS}, CPU {spc:.0f} ms"),
        Row(
            f"(w) {words} words, default path: patched model",
            sw,
            note=f"{(sw / sp - 1) * 100:+.1f} % wall, CPU {swc:.0f} ms ({(swc / spc - 1) * 100:+.1f} %)",
        ),
    ]


def render(rows: list[Row]) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}" if value < 10 else f"{value:.1f}"

    width = max(len(r.measure) for r in rows)
    lines = [f"{'measure':<{width}}  {'p50 ms':>9}  {'p99 ms':>9}  notes", "-" * (width + 60)]
    lines += [f"{r.measure:<{width}}  {ms(r.p50_ms):>9}  {ms(r.p99_ms):>9}  {r.note}" for r in rows]
    lines.append(
        "(d)-(f), (i), (j): single value in the p50 column (median of runs for (e), (i), (j)); RTF = compute/audio s"
    )
    lines.append("(g): latency per request as the caller sees it, queue wait included")
    lines.append("(k): interleaved, one of each per round; the hit goes through TtsClient (a fresh inbox per request)")
    lines.append("(l): a single request and a burst alternated, each with its own new text (a cache miss)")
    lines.append("(w): medians; segment and word requests alternated in one run, the same text, cache off")
    return "\n".join(lines)


async def main() -> None:
    setup_logging("error")
    with tempfile.TemporaryDirectory(prefix="tts-bench-") as tmp:
        server = EmbeddedNatsServer(Path(tmp) / "nats", port=-1)
        url = await asyncio.to_thread(server.start)
        try:
            started = time.perf_counter()
            rows = await bench(url, Path(tmp))
        finally:
            await asyncio.to_thread(server.stop)
    print(render(rows))
    print(f"bench took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
