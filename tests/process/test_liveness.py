"""A caller learns within seconds that nobody works on its request, and bursts are retried, not refused.

Acks, heartbeats and the client's stall timer (tts_actor/heartbeat.py) against a real ``tts-actor``
process killed with SIGKILL mid-request; plain callers (no ``Tts-Heartbeat-Ms``) still get one reply;
the client's retries of ``busy`` (tts_actor/client/retry.py) against small admission limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest

from tests.support.helpers import GatedPiper, eventually, serving, wav_info
from tests.support.proxy import CuttableProxy
from tests.support.serve_process import serve_env, spawn
from tts_actor.client.reply import NoResponders
from tts_actor.client.retry import ClientRetryPolicy
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.heartbeat import ResponderSilent
from tts_actor.wire.messages import SynthesisRequest

DEAD_RESPONDER_BOUND_S = 15.0  # generous (3 heartbeats of 1 s is the design); the caller's timeout is 120 s

ENGINE_HANGS = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from tts_actor.app import run_service
    from tts_actor.backends.piper import PiperBackend
    from tts_actor.config import load_settings
    from tts_actor.observability.logs import setup_logging

    class Hangs(PiperBackend):
        '''The real Piper adapter whose engine call never returns: the process is killed during it.'''

        def synthesize(self, request, voice):
            print("synthesis started", flush=True)
            threading.Event().wait(600)
            return super().synthesize(request, voice)

    settings = load_settings().with_(cache_dir=Path(sys.argv[1]), backends=("piper",))
    setup_logging("info", "json")
    sys.exit(run_service(settings, adapters={"piper": Hangs(settings)}))
    """
)


async def test_kill_9_of_the_service_mid_request_is_known_in_seconds(tmp_path: Path, nats_url: str) -> None:
    """SIGKILL while one request is in the engine and others queue: every caller raises a retryable error fast."""
    env = serve_env(tmp_path, NATS_URL=nats_url)
    nc = await nats.connect(nats_url)
    plain = TtsClient(nc, timeout_s=120, retry_policy=None)
    retrying = TtsClient(nc, timeout_s=120)
    try:
        async with spawn([sys.executable, "-c", ENGINE_HANGS, str(tmp_path / "cache")], env) as serve:
            await serve.wait_for("state_changed", to_state="loaded")

            async def streamed() -> None:
                async for _ in plain.stream(SynthesisRequest(text="A stream that never starts.")):
                    pass

            calls = [
                asyncio.create_task(plain.synthesize(SynthesisRequest(text="In the engine when it dies."))),
                asyncio.create_task(streamed()),
                asyncio.create_task(retrying.synthesize(SynthesisRequest(text="Queued, then retried."))),
            ]
            assert serve.proc.stdout is not None
            assert (await asyncio.wait_for(serve.proc.stdout.readline(), 30)).strip() == b"synthesis started"
            killed = time.monotonic()
            os.killpg(serve.proc.pid, signal.SIGKILL)
            _, pending = await asyncio.wait(calls, timeout=60)
            elapsed = time.monotonic() - killed
            assert not pending, "a caller still waits for a dead responder"
            errors = [task.exception() for task in calls]
    finally:
        await nc.close()
    print(f"dead responder detected by every caller {elapsed:.2f} s after kill -9 (caller timeout 120 s)")
    assert elapsed < DEAD_RESPONDER_BOUND_S
    whole, stream, retried = errors
    for error in (whole, stream):  # no retry: the stall error itself, retryable
        assert isinstance(error, ResponderSilent), error
        assert error.code is ErrorCode.BACKEND_NOT_READY and error.retry_after_ms, error
        assert "went silent" in error.message
    # with retries: the stall, one more try, and nobody is listening any more: told at once, not retried
    assert isinstance(retried, NoResponders), retried
    assert retrying.retries == 1


async def test_plain_callers_get_one_reply_and_opted_in_callers_get_acks_and_heartbeats(
    settings: Settings, nc: nats.NATS
) -> None:
    """With the engine held, the opted-in caller hears an ack and heartbeats; the plain caller only its audio."""
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated):
        plain_sub = await nc.subscribe(nc.new_inbox())
        opted_sub = await nc.subscribe(nc.new_inbox())
        body = json.dumps({"text": "One reply only."}).encode()
        await nc.publish("tts.synthesize", body, reply=plain_sub.subject)
        await nc.publish("tts.synthesize", body, reply=opted_sub.subject, headers={Header.HEARTBEAT_MS.value: "200"})
        ack = await opted_sub.next_msg(timeout=10)
        assert ack.headers is not None and ack.headers[Header.STATUS.value] == "accepted" and ack.data == b""
        assert ack.headers[Header.REQUEST_ID.value]
        await asyncio.to_thread(gated.synth_started.wait, 10)
        beats = [await opted_sub.next_msg(timeout=10) for _ in range(2)]  # queued behind the plain request
        assert all(m.headers and m.headers[Header.STATUS.value] == "working" and not m.data for m in beats)
        gated.synth_gate.set()
        plain_reply = await plain_sub.next_msg(timeout=30)
        while True:  # perhaps more heartbeats while its own engine call runs, then the audio
            opted_reply = await opted_sub.next_msg(timeout=30)
            if Header.STATUS.value not in (opted_reply.headers or {}):
                break
        await nc.flush()
        # the plain caller's only message was its audio, and nothing came after it
        assert Header.STATUS.value not in (plain_reply.headers or {})
        assert wav_info(plain_reply.data).duration_s > 0.3
        assert wav_info(opted_reply.data).duration_s > 0.3
        assert plain_sub.pending_msgs == 0


async def test_a_bad_heartbeat_header_is_a_clear_error(piper_loaded: object, nc: nats.NATS) -> None:
    reply = await nc.request(
        "tts.synthesize", b'{"text": "Hi."}', timeout=10, headers={Header.HEARTBEAT_MS.value: "soon"}
    )
    error = json.loads(reply.data)["error"]
    assert error["code"] == "invalid_request" and Header.HEARTBEAT_MS.value in error["fix"]


async def test_a_burst_through_the_client_all_get_audio_while_a_non_retrying_caller_gets_busy(
    settings: Settings, nc: nats.NATS
) -> None:
    """50 concurrent requests against 3 in flight (1 in the engine, 2 queued): retries turn the burst into a queue."""
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    async with serving(settings, gated, max_inflight=3, backend_queue_depth=2) as (app, _actor):
        client = TtsClient(nc, timeout_s=60)
        texts = [f"Short request number {i}." for i in range(50)]
        burst = [asyncio.create_task(client.synthesize(SynthesisRequest(text=t))) for t in texts]
        assert app.service is not None
        await eventually(lambda: len(app.service._inflight) >= 3)  # full for good while the engine is held
        with pytest.raises(TtsError) as refused:  # admission still answers at once for callers that do not retry
            await TtsClient(nc, timeout_s=60, retry_policy=None).synthesize(SynthesisRequest(text="Me too."))
        assert refused.value.code is ErrorCode.BUSY and refused.value.retry_after_ms
        gated.synth_gate.set()
        replies = await asyncio.gather(*burst)
    durations = [wav_info(r.audio).duration_s for r in replies]
    print(f"burst of 50: {len(replies)} answered with audio, {client.retries} retries")
    assert all(d > 0.5 for d in durations), durations
    assert client.retries > 0


def test_retry_delays_honour_retry_after_with_capped_full_jitter() -> None:
    policy = ClientRetryPolicy(jitter_cap_ms=2000)
    rng = random.Random(7)
    busy = TtsError(ErrorCode.BUSY, "busy", "retry", retry_after_ms=500)
    first = [policy.delay_s(busy, 0, rng) for _ in range(500)]
    late = [policy.delay_s(busy, 10, rng) for _ in range(500)]
    assert min(first) >= 0.5 and max(first) <= 1.0  # retry_after, plus up to one retry_after of jitter
    assert min(late) >= 0.5 and max(late) <= 2.5 and max(late) > 2.0  # the window grew, up to the cap
    assert len({round(d, 3) for d in first}) > 100  # spread, not in step
    assert policy.retryable(busy)
    assert not policy.retryable(TtsError(ErrorCode.BACKEND_FAILED, "failed", "fix it"))
    assert not policy.retryable(NoResponders(ErrorCode.BACKEND_NOT_READY, "nobody", "start one", retry_after_ms=1))
    assert policy.retryable(ResponderSilent(ErrorCode.BACKEND_NOT_READY, "silent", "retry", retry_after_ms=250))


async def test_a_nats_drop_during_a_multi_chunk_reply_is_no_crash_and_the_caller_knows_in_seconds(
    settings: Settings, nats_url: str, nc: nats.NATS, capfd: pytest.CaptureFixture[str]
) -> None:
    """NATS lost while a 3 MiB reply is ready to go: a ``reply_lost`` warning (no crash); the caller's stall error."""
    proxy = CuttableProxy(int(nats_url.rsplit(":", 1)[1]))
    gated = GatedPiper(settings)
    gated.synth_gate.clear()
    text = " ".join(["The quick brown fox jumps over the lazy dog, and then it runs far away."] * 6)
    async with serving(settings, gated, nats_url=await proxy.listen()) as (app, _actor):
        client = TtsClient(nc, timeout_s=120, retry_policy=None)
        call = asyncio.create_task(client.synthesize(SynthesisRequest(text=text, sample_rate=48000)))
        await asyncio.to_thread(gated.synth_started.wait, 10)
        await proxy.cut()
        cut = time.monotonic()
        gated.synth_gate.set()  # the audio is made while the service is reconnecting: > 2 MiB cannot be buffered
        with pytest.raises(ResponderSilent) as silent:
            await call
        detected = time.monotonic() - cut
        assert app.service is not None
        await eventually(lambda: not app.service._inflight, 60)
        await proxy.listen()  # back, so that the service stops as usual
    log = capfd.readouterr().out
    print(f"NATS drop mid-reply detected by the caller {detected:.2f} s after the cut (caller timeout 120 s)")
    assert detected < DEAD_RESPONDER_BOUND_S
    assert "went silent" in silent.value.message
    assert "reply_lost" in log and "OutboundBufferLimitError" in log
    assert "synthesize_crashed" not in log and "Traceback" not in log
