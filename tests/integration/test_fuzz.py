"""Fuzzing every endpoint and control subject of the real service over a real nats-server, with hypothesis.

Random bytes, deep and huge JSON, extreme numbers, every Unicode category, markup, odd headers and maximum
sizes. Every reply must be well formed (audio, or JSON with an error's code, message and fix, or the
endpoint's JSON) and the service must keep serving: after the run a real Piper synthesis still works.

Requests that pass validation go to ``fast``: the real Piper adapter (voices, languages, validation) whose
synthesis returns a short tone instead of running the ONNX model, so that thousands of cases fit in CI time;
the real Piper backend runs beside it and speaks once at the end.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from statemachine import State
from tests.support.helpers import GatedPiper, wav_info
from tts_actor.app import TtsApp
from tts_actor.audio.pcm import Audio
from tts_actor.backends.base import Voice
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode
from tts_actor.nats_edge.embedded_server import EmbeddedNatsServer
from tts_actor.wire.messages import SynthesisRequest

CASES: dict[str, int] = {}
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
ERROR_CODES = {code.value for code in ErrorCode}


class FastTone(GatedPiper):
    """Piper's declarations and validation; synthesis is a 50 ms tone (the fuzz is about the edge, not the voice)."""

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        rate = 22050
        samples = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate // 20)]
        return Audio(struct.pack(f"<{len(samples)}h", *samples), rate)


class Service:
    """The service and a client on a loop of their own thread, so hypothesis can drive it synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.server = EmbeddedNatsServer(tmp / "nats", port=-1, max_payload=8 * 1024 * 1024)
        self.app: TtsApp | None = None
        self.nc: Client | None = None

    def run(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def start(self) -> None:
        self.thread.start()
        url = self.server.start()
        base = Settings(cache_dir=self.tmp / "cache", allow_download=False, instance="fuzz")
        tuned = base.with_(nats_url=url, backends=("fast", "piper"), max_inflight=64, synthesis_timeout_s=30)
        fast = FastTone(tuned, name="fast")
        fast.load_gate.set()

        async def up() -> None:
            self.app = TtsApp(tuned, adapters={"fast": fast})
            await self.app.start()
            assert self.app.registry is not None
            for actor in self.app.registry.actors.values():
                assert await actor.wait_settled(30) is State.LOADED
            self.nc = await nats.connect(url, allow_reconnect=False)

        self.run(up(), 60)

    def stop(self) -> None:
        async def down() -> None:
            if self.nc is not None:
                await self.nc.close()
            if self.app is not None:
                await self.app.stop()

        try:
            self.run(down(), 60)
        finally:
            self.server.stop()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def reload_fast(self) -> None:
        """Bring ``fast`` back if a fuzzed control command unloaded it."""
        assert self.app is not None and self.app.registry is not None
        fast = self.app.registry.actors["fast"]

        async def reload() -> None:
            await fast.wait_settled(10)
            if not fast.ready:
                fast.retry()
                assert await fast.wait_settled(10) is State.LOADED

        self.run(reload())

    def request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> list[Any]:
        """Send one request on a private inbox; every message of the answer (chunked audio included)."""

        async def ask() -> list[Any]:
            assert self.nc is not None
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox)
            try:
                await self.nc.publish(subject, payload, reply=inbox, headers=headers)
                first = await sub.next_msg(timeout=20)
                messages = [first]
                count = int((first.headers or {}).get("Tts-Chunk-Count", "1"))
                for _ in range(1, count):
                    messages.append(await sub.next_msg(timeout=20))
                return messages
            finally:
                await sub.unsubscribe()

        return self.run(ask())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("fuzz"))
    running.start()
    yield running
    assert running.app is not None and running.app.registry is not None
    # after everything: still serving, and the real voice still speaks
    reply = running.request("tts.synthesize", json.dumps({"text": "Still here.", "backend": "piper"}).encode())
    assert reply[0].headers["Content-Type"] == "audio/wav" and wav_info(reply[0].data).duration_s > 0.3
    health = json.loads(running.request("tts.health", b"")[0].data)
    assert health["status"] == "ok" and set(health["loaded"]) == {"fast", "piper"}, health
    running.stop()
    line = f"fuzz: {sum(CASES.values())} cases, no crash, every reply well formed: {CASES}"
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if capture is not None:  # shown in `make test` output, whatever the capture mode
        with capture.global_and_fixture_disabled():
            print("\n" + line, flush=True)
    else:
        print(line)


def _count(kind: str) -> None:
    CASES[kind] = CASES.get(kind, 0) + 1


def assert_error(msg: Any) -> dict[str, Any]:
    headers = msg.headers or {}
    assert headers.get("Tts-Error-Code") in ERROR_CODES, headers
    assert headers.get("Nats-Service-Error-Code", "").isdigit(), headers
    body = json.loads(msg.data)["error"]
    assert body["code"] == headers["Tts-Error-Code"]
    assert isinstance(body["message"], str) and body["message"] and isinstance(body["fix"], str) and body["fix"]
    assert body["code"] != "internal", body  # a crash answered politely is still a crash
    assert "Traceback" not in body["message"] and "set_int_max_str_digits" not in body["message"]
    assert len(msg.data) < 64 * 1024  # an error never echoes a huge input back
    return body


def assert_synthesis_reply(messages: list[Any]) -> None:
    first = messages[0]
    headers = first.headers or {}
    if "Tts-Error-Code" in headers:
        assert_error(first)
        return
    assert headers["Content-Type"].startswith("audio/"), headers  # any format the request named (mp3 too)
    audio = b"".join(m.data for m in messages)
    assert len(audio) == int(headers["Tts-Total-Bytes"]) > 0
    if headers["Content-Type"] == "audio/wav":
        assert wav_info(audio).frames > 0


# --- strategies ---------------------------------------------------------------------

extreme_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**300]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0]),
)
any_text = st.text(st.characters(codec="utf-8"), max_size=300)  # every Unicode category, surrogates excluded
markup = st.sampled_from(
    [
        "<speak>Hello <break time='3s'/></speak>",
        "<script>alert(1)</script>",
        "{{7*7}} ${jndi:ldap://x} %s%s%n",
        "'; DROP TABLE voices; --",
        "\u202eevil\u202c \u200b\u200d\ufeff",
        "a\u0301\u0301\u0301\u0301\u0301\u0301",
        "🏳️‍🌈" * 50,
        "\t\n\r hello \n",
    ]
)
json_scalars = st.one_of(st.none(), st.booleans(), extreme_numbers, any_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(json_values, markup, st.sampled_from(["en", "de", "EN", "xx", "fast", "piper", "wav", "pcm"]))
requests = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(any_text, markup, json_values),
        "language": field_values,
        "voice": field_values,
        "backend": st.one_of(st.sampled_from(["fast", "nope", "../piper", ""]), json_values),
        "format": st.one_of(st.sampled_from(["wav", "pcm", "mp3", "WAV", ""]), json_values),
        "wait_ms": st.one_of(extreme_numbers, json_values),
        "options": st.one_of(
            st.dictionaries(
                st.sampled_from(["speed", "exaggeration", "cfg_weight", "temperature", "seed", "other"]),
                st.one_of(extreme_numbers, json_values),
                max_size=5,
            ),
            json_values,
        ),
        "reference_audio": st.one_of(st.binary(max_size=64).map(lambda b: b.hex()), json_values),
        "unknown": json_values,
    },
)
# every header name a NATS client can send (the token characters), values of any Unicode with CR/LF
header_names = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}", fullmatch=True)
header_values = st.text(st.characters(codec="utf-8"), max_size=200)
odd_headers = st.one_of(
    st.none(),
    st.dictionaries(header_names, header_values, max_size=5),
    st.fixed_dictionaries({"traceparent": header_values}),
    st.fixed_dictionaries({"Content-Type": header_values, "Nats-Expected-Stream": header_values}),
)


# --- the fuzz tests -----------------------------------------------------------------


@settings(FUZZ, max_examples=2200)
@given(payload=st.binary(max_size=2048))
def test_random_bytes_to_synthesize(service: Service, payload: bytes) -> None:
    _count("synthesize: random bytes")
    assert_synthesis_reply(service.request("tts.synthesize", payload))


@settings(FUZZ, max_examples=4500)
@given(body=requests, headers=odd_headers)
def test_structured_requests_with_hostile_values(service: Service, body: dict[str, Any], headers: Any) -> None:
    _count("synthesize: structured JSON, odd headers")
    assert_synthesis_reply(service.request("tts.synthesize", json.dumps(body).encode(), headers))


@settings(FUZZ, max_examples=300)
@given(
    depth=st.integers(min_value=1, max_value=200_000),
    shape=st.sampled_from(["list", "dict"]),
    width=st.integers(min_value=0, max_value=200_000),
)
def test_deep_and_wide_json(service: Service, depth: int, shape: str, width: int) -> None:
    _count("synthesize: deep or huge JSON")
    if shape == "list":
        payload = b"[" * depth + b"]" * depth
    else:
        payload = b'{"text": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    assert_synthesis_reply(service.request("tts.synthesize", payload))
    wide = json.dumps({"text": "x", "unknown": list(range(width))}).encode()
    assert_synthesis_reply(service.request("tts.synthesize", wide))


@settings(FUZZ, max_examples=1500)
@given(
    endpoint=st.sampled_from(["status", "voices", "health"]),
    payload=st.one_of(st.binary(max_size=1024), json_values.map(lambda v: json.dumps(v).encode())),
    headers=odd_headers,
)
def test_status_voices_and_health_answer_json_whatever_is_sent(
    service: Service, endpoint: str, payload: bytes, headers: Any
) -> None:
    _count(f"{endpoint}")
    body = json.loads(service.request(f"tts.{endpoint}", payload, headers)[0].data)
    assert isinstance(body, dict) and ("backends" in body or "status" in body), body


@settings(FUZZ, max_examples=600)
@given(
    action=st.sampled_from(["create", "get", "update", "list", "delete", "admin.list", "admin.delete"]),
    payload=st.one_of(st.binary(max_size=1024), json_values.map(lambda v: json.dumps(v).encode())),
    headers=odd_headers,
)
def test_consent_subjects_answer_a_record_a_page_or_a_structured_error(
    service: Service, action: str, payload: bytes, headers: Any
) -> None:
    _count("consents")
    reply = service.request(f"tts.consents.{action}", payload, headers)[0]
    body = json.loads(reply.data)
    assert isinstance(body, dict), body
    if "error" in body:
        assert body["error"]["code"] in ERROR_CODES and body["error"]["fix"], body
    else:  # an empty or a random body can list (nothing to see) but never make, read or delete a record
        assert action.endswith("list") and body["object"] == "list", body


subject_tokens = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=".*>"), min_size=1, max_size=40
)


@settings(FUZZ, max_examples=1500)
@given(
    backend=st.one_of(st.sampled_from(["fast", "piper", "mms", "nope"]), subject_tokens),
    action=st.one_of(st.sampled_from(["retry", "unload", "load", "RETRY"]), subject_tokens),
    payload=st.binary(max_size=256),
)
def test_control_subjects(service: Service, backend: str, action: str, payload: bytes) -> None:
    _count("control")
    if action == "unload" and backend == "piper":
        action = "retry"  # keep the real voice loaded for the final check; unloading is fuzzed on `fast`
    msg = service.request(f"tts.control.{backend}.{action}", payload)[0]
    body = json.loads(msg.data)
    if "error" in body:
        assert_error(msg)
    else:
        assert isinstance(body["ok"], bool) and body["backend"] == backend and body["instance"] == "fuzz"
    service.reload_fast()  # an unloaded `fast` would send the next cases to the real (slow) Piper as fallback


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"text": "a" * 5000}).encode(),  # the text limit, exactly
        json.dumps({"text": "a" * 5001}).encode(),  # one over
        json.dumps({"text": "é" * 5000}).encode(),  # multi-byte, at the limit
        json.dumps({"text": "Hi.", "unknown": "x" * (4 * 1024 * 1024)}).encode(),  # over TTS_MAX_REQUEST_BYTES
        json.dumps({"text": "Hi.", "reference_audio": "A" * (3 * 1024 * 1024)}).encode(),  # reference over 2 MiB
        b'{"text": "Hi.", "wait_ms": ' + b"9" * 5000 + b"}",  # a 5000-digit integer
        b'{"text": "Hi.", "wait_ms": 1e999}',  # infinity in JSON
        b'{"text": "Hi.", "wait_ms": NaN}',
        b'{"text": "\\ud800"}',  # a lone surrogate, escaped
        b"\xff\xfe\x00t\x00e\x00x\x00t",  # UTF-16 with BOM
        b"",
    ],
    ids=lambda p: f"{len(p)}B",
)
def test_maximum_sizes_and_edge_values(service: Service, payload: bytes) -> None:
    _count("synthesize: maximum sizes")
    assert_synthesis_reply(service.request("tts.synthesize", payload))
