"""The OpenAI-compatible HTTP edge, end to end: the official ``openai`` package against a real uvicorn
server, which is a client of the real service (real nats-server, real Piper voice) over NATS.

The server runs on this test's event loop, so the SDK used is ``AsyncOpenAI`` (the synchronous
client would block the loop it waits on); one test drives the synchronous client from a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx2
import openai
import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statemachine import State
from tests.support.helpers import GatedPiper, eventually, serving
from tts_actor.app import TtsApp
from tts_actor.config import Settings
from tts_actor.http_edge.app import HttpEdge
from tts_actor.http_edge.edge_settings import EdgeConfigError, EdgeSettings, load_edge_settings, parse_listen
from tts_actor.http_edge.openai_compat import RESPONSE_FORMATS

API_KEY = "test-key-1"
TWENTY_WORDS = (
    "The translator sent this sentence so that the speech service could read it aloud "
    "to every listener in the room today."
)


@contextlib.asynccontextmanager
async def edge_stack(
    settings: Settings, nc: Client, edge_settings: EdgeSettings | None = None
) -> AsyncIterator[tuple[HttpEdge, TtsApp, GatedPiper]]:
    """The service (piper loaded, xtts failed: not installed, ``gated`` held loading) and the edge in front.

    The edge has a NATS connection of its own, as it would on another host.
    """
    gated = GatedPiper(settings)  # its load waits on a gate: a backend caught loading
    app = TtsApp(settings.with_(backends=("piper", "xtts", "gated")), adapters={"gated": gated})
    edge = HttpEdge(settings, edge_settings or EdgeSettings(api_keys=(API_KEY,)), "127.0.0.1", 0)
    await app.start()
    try:
        assert app.registry is not None
        assert await app.registry.actors["piper"].wait_settled(30) is State.LOADED
        assert await app.registry.actors["xtts"].wait_settled(10) is State.FAILED
        await edge.start(nc)
        yield edge, app, gated
    finally:
        gated.load_gate.set()
        await edge.stop()
        await app.stop()


def sdk(edge: HttpEdge, api_key: str = API_KEY) -> openai.AsyncOpenAI:
    """The official client, retries off: each status is seen as the edge sent it."""
    return openai.AsyncOpenAI(api_key=api_key, base_url=f"{edge.url}/v1", max_retries=0, timeout=60)


def decoded_seconds(data: bytes, fmt: str, content_type: str) -> float:
    """The audio's length, decoded by FFmpeg (PyAV); raw PCM by its byte count and the rate it declares."""
    if fmt == "pcm":
        assert content_type.startswith("audio/L16"), content_type
        rate = int(content_type.split("rate=")[1].split(";")[0])
        assert len(data) % 2 == 0
        return len(data) / 2 / rate
    samples, rate = 0, 0
    with av.open(io.BytesIO(data), mode="r") as container:
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    assert rate > 0, f"no audio frames decoded from {len(data)} bytes of {fmt}"
    return samples / rate


EXPECTED_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/L16",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
}


@pytest.mark.parametrize("fmt", RESPONSE_FORMATS)  # OpenAI's six, then the service's m4a and webm
async def test_every_format_whole_and_streamed_decodes_to_plausible_speech(
    settings: Settings, nc: Client, fmt: str
) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        client = sdk(edge)
        whole = await client.audio.speech.create(model="tts-1", voice="alloy", input=TWENTY_WORDS, response_format=fmt)
        content_type = whole.response.headers["content-type"]
        assert content_type.startswith(EXPECTED_TYPES[fmt]), content_type
        assert whole.response.headers["tts-backend"] == "piper"
        assert whole.response.headers["tts-synthetic"] == "true"  # every audio reply says it is synthetic
        seconds = decoded_seconds(whole.content, fmt, content_type)
        assert 4.0 < seconds < 13.0, seconds  # 20 words at 100-250 words a minute

        pieces: list[bytes] = []
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TWENTY_WORDS, response_format=fmt, stream_format="audio"
        ) as response:
            assert response.status_code == 200 and response.headers["tts-synthetic"] == "true"
            assert response.headers.get("transfer-encoding") == "chunked"
            async for piece in response.iter_bytes():
                pieces.append(piece)
        streamed = b"".join(pieces)
        assert abs(decoded_seconds(streamed, fmt, response.headers["content-type"]) - seconds) < 0.5


async def test_sse_stream_carries_the_audio_in_deltas_then_done(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        async with sdk(edge).audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Events, one after another.", response_format="wav", stream_format="sse"
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = "".join([line async for line in response.iter_text()])
    events = [json.loads(block[len("data: ") :]) for block in text.split("\n\n") if block.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 2
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] > 0
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert 0.8 < decoded_seconds(audio, "wav", "audio/wav") < 5.0


async def test_model_voice_and_speed_map_onto_the_service(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(api_keys=(API_KEY,), model_aliases={"tts-1": "piper", "tts-1-hd": "xtts"})
    async with edge_stack(settings, nc, config) as (edge, _, _):
        client = sdk(edge)
        # a backend by name, a service voice id
        named = await client.audio.speech.create(
            model="piper", voice="en_US-joe-medium", input=TWENTY_WORDS, response_format="wav"
        )
        assert named.response.headers["tts-voice"] == "en_US-joe-medium"
        normal = decoded_seconds(named.content, "wav", "audio/wav")
        fast = await client.audio.speech.create(
            model="tts-1", voice="echo", input=TWENTY_WORDS, response_format="wav", speed=2.0
        )
        assert fast.response.headers["tts-backend"] == "piper"
        assert decoded_seconds(fast.content, "wav", "audio/wav") < normal * 0.7
        # tts-1-hd goes where it is configured to: xtts, not installed here
        with pytest.raises(openai.APIStatusError) as failed:
            await client.audio.speech.create(model="tts-1-hd", voice="alloy", input="Hello.", response_format="wav")
        assert failed.value.status_code == 503 and failed.value.body["code"] == "backend_failed"
        with pytest.raises(openai.NotFoundError) as voice:
            await client.audio.speech.create(
                model="piper", voice="no_such_voice", input="Hello.", response_format="wav"
            )
        assert voice.value.body["code"] == "unknown_voice" and voice.value.body["param"] == "voice"
        assert "en_US-joe-medium" in voice.value.body["fix"]
        with pytest.raises(openai.NotFoundError) as model:
            await client.audio.speech.create(model="whisper-9", voice="alloy", input="Hello.", response_format="wav")
        assert model.value.body["code"] == "unknown_backend" and model.value.body["param"] == "model"


async def test_failed_backend_is_503_with_the_reason_and_the_fix(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk(edge).audio.speech.create(model="xtts", voice="alloy", input="Hello.", response_format="wav")
    error = caught.value
    assert error.status_code == 503
    body = error.body
    assert body["code"] == "backend_failed" and body["type"] == "server_error"
    assert body["reason"] == "package_missing" and body["state"] == "failed"
    assert "pip install -e '.[xtts]'" in body["fix"]
    assert "xtts" in body["message"]
    assert "retry-after" not in error.response.headers  # failed does not heal by waiting


async def test_loading_backend_is_503_with_retry_after(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, app, _):
        assert app.registry is not None and app.registry.actors["gated"].state is State.MISSING
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk(edge).audio.speech.create(model="gated", voice="alloy", input="Hello.", response_format="wav")
        error = caught.value
        assert error.status_code == 503 and error.body["code"] == "backend_not_ready"
        assert error.body["state"] == "missing" and error.body["backend"] == "gated"
        assert int(error.response.headers["retry-after"]) >= 1
        assert int(error.response.headers["retry-after-ms"]) > 0


async def test_busy_backend_is_429_with_retry_after(settings: Settings, nc: Client) -> None:
    gated = GatedPiper(settings)
    gated.synth_gate.clear()  # the engine call holds: one running, one queued, the next is busy
    async with serving(settings, gated, backend_queue_depth=1) as (_, actor):
        edge = HttpEdge(settings, EdgeSettings(), "127.0.0.1", 0)
        await edge.start(nc)
        try:
            client = sdk(edge)
            speak = dict(model="gated", voice="alloy", response_format="wav")
            first = asyncio.create_task(client.audio.speech.create(input="One.", **speak))
            await asyncio.to_thread(gated.synth_started.wait, 10)
            second = asyncio.create_task(client.audio.speech.create(input="Two.", **speak))
            await eventually(lambda: actor.status()["queue"] == 1)
            with pytest.raises(openai.RateLimitError) as caught:
                await client.audio.speech.create(input="Three.", **speak)
            assert caught.value.status_code == 429 and caught.value.body["code"] == "busy"
            assert caught.value.body["type"] == "rate_limit_error"
            assert int(caught.value.response.headers["retry-after"]) >= 1
            gated.synth_gate.set()
            for task in (first, second):
                reply = await task
                assert reply.response.headers["tts-backend"] == "gated"
        finally:
            await edge.stop()


async def test_bad_requests_get_openai_shaped_4xx_and_the_edge_keeps_serving(settings: Settings, nc: Client) -> None:
    config = EdgeSettings(api_keys=(API_KEY,), max_body_bytes=4096)
    async with edge_stack(settings, nc, config) as (edge, _, _):
        client = sdk(edge)
        with pytest.raises(openai.BadRequestError) as speed:
            await client.audio.speech.create(
                model="tts-1", voice="alloy", input="Hello.", speed=9.0, response_format="wav"
            )
        assert speed.value.body["param"] == "speed" and speed.value.body["code"] == "invalid_request"
        with pytest.raises(openai.BadRequestError) as empty:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="   ", response_format="wav")
        assert empty.value.body["code"] == "invalid_request" and "empty" in empty.value.body["message"]
        with pytest.raises(openai.APIStatusError) as big:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="word " * 2000, response_format="wav")
        assert big.value.status_code == 413 and big.value.body["code"] == "payload_too_large"
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", extra_body={"volume": 11})
        assert unknown.value.body["param"] == "volume"
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        async with httpx2.AsyncClient(base_url=edge.url, headers=headers) as raw:
            broken = await raw.post("/v1/audio/speech", content=b'{"model": "tts-1", "input": ')
            assert broken.status_code == 400
            assert broken.json()["error"]["code"] == "invalid_request"
            assert set(broken.json()["error"]) >= {"message", "type", "param", "code"}
            no_input = await raw.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy"})
            assert no_input.status_code == 400 and no_input.json()["error"]["param"] == "input"
        # and it still speaks
        ok = await client.audio.speech.create(model="tts-1", voice="alloy", input="Still here.", response_format="wav")
        assert decoded_seconds(ok.content, "wav", "audio/wav") > 0.3


async def test_missing_or_wrong_token_is_401_and_probes_stay_open(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        with pytest.raises(openai.AuthenticationError) as wrong:
            await sdk(edge, api_key="not-a-key").audio.speech.create(
                model="tts-1", voice="alloy", input="Hi.", response_format="wav"
            )
        assert wrong.value.body["code"] == "invalid_api_key" and wrong.value.body["type"] == "authentication_error"
        async with httpx2.AsyncClient(base_url=edge.url) as raw:
            missing = await raw.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hi."})
            assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
            assert missing.headers["www-authenticate"] == "Bearer"
            assert (await raw.get("/v1/models")).status_code == 401
            assert (await raw.get("/healthz")).json() == {"status": "alive"}
            ready = await raw.get("/readyz")
            assert ready.status_code == 200 and ready.json()["fleet"]["loaded"] == ["piper"]
            await nc.close()  # the edge's own NATS connection gone: not ready, and speech answers at once
            assert (await raw.get("/readyz")).status_code == 503
            assert (await raw.get("/healthz")).status_code == 200
        with pytest.raises(openai.InternalServerError) as down:
            await sdk(edge).audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="wav")
        assert down.value.status_code == 503 and down.value.body["code"] == "backend_not_ready"
        assert "NATS" in down.value.body["message"] and down.value.response.headers["retry-after"] == "1"


async def test_models_and_voices_list_the_fleet(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        client = sdk(edge)
        models = {m.id: m for m in (await client.models.list()).data}
        assert {"piper", "xtts", "gated", "tts-1", "tts-1-hd"} <= set(models)
        assert models["piper"].model_extra["state"] == "loaded"
        assert models["xtts"].model_extra["state"] == "failed" and "pip install" in models["xtts"].model_extra["fix"]
        assert (await client.models.retrieve("piper")).id == "piper"
        async with httpx2.AsyncClient(base_url=edge.url, headers={"Authorization": f"Bearer {API_KEY}"}) as raw:
            voices = (await raw.get("/v1/audio/voices")).json()
        ids = {(v["backend"], v["id"]) for v in voices["voices"]}
        assert ("piper", "en_US-joe-medium") in ids
        assert voices["aliases"]["alloy"] is None  # OpenAI's names: the default voice, unless configured


async def test_the_synchronous_sdk_works_too(settings: Settings, nc: Client) -> None:
    async with edge_stack(settings, nc) as (edge, _, _):
        client = openai.OpenAI(api_key=API_KEY, base_url=f"{edge.url}/v1", max_retries=0, timeout=60)
        reply = await asyncio.to_thread(
            client.audio.speech.create, model="tts-1", voice="alloy", input="From a thread.", response_format="wav"
        )
        assert decoded_seconds(reply.content, "wav", "audio/wav") > 0.3


async def test_traceparent_reaches_the_service_span(
    settings: Settings, nc: Client, spans: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller_span = "00f067aa0ba902b7"
    async with edge_stack(settings, nc) as (edge, _, _):
        spans.clear()
        await sdk(edge).audio.speech.create(
            model="tts-1",
            voice="alloy",
            input="Traced.",
            response_format="wav",
            extra_headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
    finished = spans.get_finished_spans()
    service = [s for s in finished if s.name == "tts.synthesize"]
    edge_spans = [s for s in finished if s.name == "POST /v1/audio/speech"]
    assert service and edge_spans, [s.name for s in finished]
    assert format(service[0].context.trace_id, "032x") == trace_id
    assert format(edge_spans[0].context.trace_id, "032x") == trace_id
    assert format(edge_spans[0].parent.span_id, "016x") == caller_span
    assert service[0].parent.span_id == edge_spans[0].context.span_id  # edge -> NATS -> service, one trace


def test_exposure_listen_and_settings_from_the_environment(settings: Settings) -> None:
    with pytest.raises(EdgeConfigError, match="TTS_HTTP_API_KEYS"):
        HttpEdge(settings, EdgeSettings(), "0.0.0.0", 8000)
    with pytest.raises(EdgeConfigError):
        HttpEdge(settings, EdgeSettings(), "tts.example.org", 8000)
    HttpEdge(settings, EdgeSettings(api_keys=("k",)), "0.0.0.0", 8000)  # with keys: allowed
    HttpEdge(settings, EdgeSettings(), "::1", 8000)  # loopback: allowed without
    assert parse_listen("[::1]:8080") == ("::1", 8080) and parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(EdgeConfigError):
        parse_listen("8000")
    edge = load_edge_settings(
        {
            "TTS_HTTP_API_KEYS": " a , b ",
            "TTS_HTTP_MODEL_ALIASES": "tts-1=piper,tts-1-hd=xtts",
            "TTS_HTTP_VOICE_ALIASES": "alloy=en_US-joe-medium",
            "TTS_HTTP_MAX_BODY_BYTES": "2048",
        }
    )
    assert edge.api_keys == ("a", "b") and edge.max_body_bytes == 2048
    assert edge.model_aliases["tts-1"] == "piper" and edge.model_aliases["gpt-4o-mini-tts"] == "auto"
    assert dict(edge.voice_aliases) == {"alloy": "en_US-joe-medium"}
    with pytest.raises(EdgeConfigError):
        load_edge_settings({"TTS_HTTP_MODEL_ALIASES": "tts-1"})
    assert "secret-key" not in repr(load_edge_settings({"TTS_HTTP_API_KEYS": "secret-key"}))
    from tests.support.cli import cli_env, run_cli

    refused = run_cli("http", "--listen", "0.0.0.0:8000", env=cli_env())
    assert refused.returncode == 2 and "TTS_HTTP_API_KEYS" in refused.stderr and "Traceback" not in refused.stderr


def test_cli_serve_with_http_answers_openai_requests(tmp_path: Path) -> None:
    """``serve --http``: one process, embedded NATS, the service and the edge; stops cleanly on SIGINT."""
    import signal

    from tests.support.cli import cli_env, free_port, serve_until_sample

    nats_port, http_port = free_port(), free_port()
    env = cli_env(TTS_EMBEDDED_NATS_PORT=str(nats_port), TTS_CACHE_DIR=str(tmp_path / "cache"), TTS_LOG_FORMAT="json")
    env["TTS_BACKENDS"] = "piper"
    proc, events = serve_until_sample(
        "--http", f"127.0.0.1:{http_port}", "--sample-out", "s.wav", env=env, cwd=tmp_path
    )
    try:
        assert events[-1]["event"] == "sample_written", events[-3:]
        assert any(e["event"] == "http_edge_serving" and e["auth"] == "off (loopback)" for e in events)
        client = openai.OpenAI(api_key="unused", base_url=f"http://127.0.0.1:{http_port}/v1", max_retries=0)
        reply = client.audio.speech.create(model="tts-1", voice="alloy", input="Over HTTP.", response_format="wav")
        assert reply.response.headers["tts-backend"] == "piper"
        assert decoded_seconds(reply.content, "wav", "audio/wav") > 0.3
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


async def test_cli_http_alone_is_a_client_of_the_fleet(piper_loaded: TtsApp, nats_url: str) -> None:
    """``tts-actor http``: a process of its own with no engine, reaching the service only through NATS."""
    import signal
    import sys

    from tests.support.cli import cli_env, free_port

    port = free_port()
    env = cli_env(NATS_URL=nats_url, TTS_LOG_FORMAT="json", TTS_HTTP_API_KEYS=API_KEY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tts_actor", "http", "--listen", f"127.0.0.1:{port}",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        serving_event: dict = {}
        while not serving_event:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "tts-actor http exited before serving"
            if line.startswith(b"{") and json.loads(line)["event"] == "http_edge_serving":
                serving_event = json.loads(line)
        assert serving_event["auth"] == "bearer"
        client = openai.AsyncOpenAI(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        reply = await client.audio.speech.create(model="piper", voice="alloy", input="Far away.", response_format="wav")
        assert reply.response.headers["tts-backend"] == "piper"
        assert decoded_seconds(reply.content, "wav", "audio/wav") > 0.3
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
