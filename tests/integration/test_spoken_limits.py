"""Over NATS with the real Piper: a request is judged by what it would say, before any job is queued."""

from __future__ import annotations

import functools
import json
import time

from nats.aio.client import Client

from tests.support.helpers import raw_request, wav_info
from tts_actor.app import TtsApp
from tts_actor.audio.segmenter import segment_text
from tts_actor.client.tts_client import TtsClient
from tts_actor.wire.messages import SynthesisRequest

DIGITS = ("9999999999 " * 454).strip()  # 4,993 characters; before: 3 GB peak and 120 s to a timeout
HAN = ("我们今天在会议室里讨论了翻译服务的语音合成问题大家都觉得效果很好" * 32)[:1000]


async def test_five_thousand_digits_are_refused_at_once_with_the_estimate(
    piper_loaded: TtsApp, nc: Client, client: TtsClient
) -> None:
    started = time.perf_counter()
    headers, body = await raw_request(nc, json.dumps({"text": DIGITS}).encode())
    elapsed = time.perf_counter() - started
    error = json.loads(body)["error"]
    assert error["code"] == "text_too_long" and headers["Nats-Service-Error-Code"] == "413", error
    assert elapsed < 1.0, elapsed
    detail = error["detail"]
    assert detail["limit_s"] == 600 and detail["estimated_audio_s"] > 1000 and detail["unit"] == "phonemes"
    assert error["backend"] == "piper" and "TTS_MAX_AUDIO_S" in error["fix"]
    reply = await client.synthesize(SynthesisRequest(text="Still serving."))
    assert wav_info(reply.audio).frames > 0


async def test_chinese_sent_as_english_is_refused_naming_chinese(piper_loaded: TtsApp, nc: Client) -> None:
    started = time.perf_counter()
    headers, body = await raw_request(nc, json.dumps({"text": HAN, "language": "en"}).encode())
    error = json.loads(body)["error"]
    assert error["code"] == "unsupported_script" and headers["Nats-Service-Error-Code"] == "422", error
    assert error["detail"]["suggested_language"] == "zh" and error["detail"]["script"] == "Han"
    assert time.perf_counter() - started < 1.0
    # allowed, it is measured as Piper would say it: 'chinese letter' a character, over the limit
    _, body = await raw_request(nc, json.dumps({"text": HAN, "allow_script_mismatch": True}).encode())
    error = json.loads(body)["error"]
    assert error["code"] == "text_too_long" and error["detail"]["estimated_audio_s"] > 600, error


async def test_a_short_mismatch_the_caller_allows_is_spoken(piper_loaded: TtsApp, client: TtsClient) -> None:
    reply = await client.synthesize(SynthesisRequest(text="你好世界", allow_script_mismatch=True))
    assert wav_info(reply.audio).duration_s > 1.0  # "chinese letter" four times


async def test_piper_measures_in_phonemes_and_no_engine_call_passes_its_limit(piper_loaded: TtsApp) -> None:
    assert piper_loaded.registry is not None
    adapter = piper_loaded.registry.actors["piper"].adapter
    (voice,) = adapter.voices()
    words = "The translator sent this sentence so that the speech service could read it aloud."
    assert 0.8 * len(words) < adapter.spoken_cost(words, voice) < 1.5 * len(words)
    digits = "9999999999 " * 18  # 198 characters: 78 s of audio before
    assert adapter.spoken_cost(digits, voice) > 7 * len(digits)
    limit = adapter.spec.max_segment_chars
    cost = functools.partial(adapter.spoken_cost, voice=voice)
    parts = segment_text(digits, limit, cost=cost)
    assert len(parts) >= 6 and all(cost(p.text) <= limit for p in parts)
    # a caller that cut by characters still cannot hand Piper more than its limit in one call
    request = SynthesisRequest(text="9999999999 " * 4)
    audio = adapter.synthesize(request, voice)
    assert 12 < audio.duration_s < 30
