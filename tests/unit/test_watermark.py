"""The inaudible watermark on real Piper speech (joe voice) with the real PerthNet weights from resemble-perth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_checks import decode
from tests.support.backends import isolated_settings
from tests.support.speech import TWENTY_SENTENCES, speak
from tts_actor.audio import watermark
from tts_actor.audio.codecs import encode_whole
from tts_actor.audio.encoding import FormatRequest, SpeechEncoder, Timing
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import segment_text
from tts_actor.backends.chatterbox import SPEC as CHATTERBOX
from tts_actor.backends.piper import SPEC as PIPER
from tts_actor.config import ConfigError, load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.jobs import JobControl
from tts_actor.lifecycle.registry import Registry
from tts_actor.synthesis.marking import Marking
from tts_actor.synthesis.pipeline import SynthesisPipeline
from tts_actor.synthesis.sinks import EncodeStage
from tts_actor.wire.messages import AudioFormat, SynthesisRequest

NOT_INSTALLED = "perth_is_not_installed_here"  # an import name no distribution provides
SAMPLE = TWENTY_SENTENCES[2:5]


def snr_db(clean: Audio, marked: Audio) -> float:
    a = np.frombuffer(clean.pcm, "<i2").astype(np.float64)
    b = np.frombuffer(marked.pcm, "<i2").astype(np.float64)
    return float(10 * np.log10((a**2).sum() / ((a - b) ** 2).sum()))


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_marked_piper_speech_is_detected_after_a_round_trip_and_unmarked_is_not(fmt: str) -> None:
    for text in SAMPLE:
        clean = speak(text)
        marked = watermark.mark(clean)
        assert marked.sample_rate == clean.sample_rate and len(marked.pcm) == len(clean.pcm)
        assert 10 < snr_db(clean, marked) < 40  # changed, but slightly: a mark, not a new signal
        for audio, expected in ((marked, True), (clean, False)):
            file = encode_whole(fmt, audio.pcm, audio.sample_rate)  # opus at its default, 32 kbit/s
            assert decode(file).duration_ms == pytest.approx(audio.duration_s * 1000, abs=30)
            found = watermark.detect_file(file)
            assert found.watermarked is expected, (text, fmt, found)
            assert (found.confidence > 0.8) if expected else (found.confidence < 0.2)


def test_silence_and_empty_audio_carry_no_mark() -> None:
    assert watermark.mark(Audio(b"", 22050)).pcm == b""
    silence = watermark.detect_samples(np.zeros(32000, np.float32), 32000)
    assert silence.watermarked is False and silence.confidence == 0.0 and silence.seconds == 1.0


@pytest.mark.parametrize("data", [b"not audio at all" * 100, b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_a_file_that_is_not_audio_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(TtsError) as info:
        watermark.detect_file(data)
    assert info.value.code is ErrorCode.INVALID_REQUEST and "cannot detect a watermark" in info.value.message


def test_without_the_package_the_error_says_how_to_install_it() -> None:
    assert watermark.missing_packages(NOT_INSTALLED) == ["resemble-perth"]
    with pytest.raises(TtsError) as info:
        watermark.detect_file(encode_whole("wav", speak("Hello.").pcm, 22050), package=NOT_INSTALLED)
    error = info.value
    assert error.code is ErrorCode.WATERMARK_UNAVAILABLE and error.service_status == 501
    assert "resemble-perth not installed" in error.message
    assert "pip install 'tts-actor[watermark]'" in error.fix and "TTS_WATERMARK=off" in error.fix


def test_the_setting_and_which_engines_get_the_mark() -> None:
    assert load_settings({}).watermark == "auto"
    assert load_settings({"TTS_WATERMARK": " ON "}).watermark == "on"
    with pytest.raises(ConfigError, match="TTS_WATERMARK"):
        load_settings({"TTS_WATERMARK": "sometimes"})
    assert CHATTERBOX.watermarks_itself and not PIPER.watermarks_itself
    auto = Marking("auto")  # the extra is installed here
    assert auto.enabled and auto.name_for(PIPER) == "perth" and auto.name_for(CHATTERBOX) is None
    assert Marking.carried(CHATTERBOX, None) == "perth" and Marking.carried(PIPER, None) is None
    assert not Marking("off").enabled and Marking("off").name_for(PIPER) is None
    assert not Marking("auto", NOT_INSTALLED).enabled  # auto without the extra: unmarked, no error
    with pytest.raises(TtsError) as info:
        Marking("on", NOT_INSTALLED).name_for(PIPER)
    assert info.value.code is ErrorCode.WATERMARK_UNAVAILABLE and "TTS_WATERMARK=on" in info.value.message
    assert Marking("on", NOT_INSTALLED).name_for(CHATTERBOX) is None  # it marks its own


async def test_the_pipeline_marks_piper_and_refuses_when_the_mark_is_required_but_missing(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",))
    registry = Registry(settings, None, lambda event: None)
    await registry.start()
    try:
        await registry.actors["piper"].wait_settled(30)
        pipeline = SynthesisPipeline(registry, settings)
        request = SynthesisRequest(text="Marked on the way to the encoder.", format=AudioFormat.OPUS)
        sent: list[tuple[bytes, dict[str, str]]] = []

        async def publish(data: bytes, headers: dict[str, str]) -> None:
            sent.append((data, headers))

        await pipeline.run(request, registry.route(request), JobControl("marked"), publish, 8 << 20).serve()
        ((body, headers),) = sent
        assert headers["Tts-Watermark"] == "perth" and watermark.detect_file(body).watermarked
        sent.clear()
        pipeline.marking = Marking("on", NOT_INSTALLED)
        with pytest.raises(TtsError) as info:
            await pipeline.run(request, registry.route(request), JobControl("refused"), publish, 8 << 20).serve()
        assert info.value.code is ErrorCode.WATERMARK_UNAVAILABLE and not sent  # nothing unmarked went out
    finally:
        await registry.stop()


async def test_the_mark_runs_on_one_torch_thread_and_leaves_the_process_default_alone() -> None:
    import threading

    import torch

    default = torch.get_num_threads()
    assert await watermark.MARKING.run(torch.get_num_threads) == 1
    assert await watermark.DETECTION.run(torch.get_num_threads) == 1
    seen: list[int] = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert torch.get_num_threads() == default and seen == [default]  # an engine's threads (MMS) keep all cores
    marked = await watermark.mark_async(speak(SAMPLE[0]))
    assert (await watermark.detect_file_async(marked.to_wav())).watermarked


def test_spliced_starts_on_the_early_mark_and_ends_on_the_whole_one() -> None:
    early = np.full(100, 1000, "<i2").tobytes()
    whole = np.full(300, 2000, "<i2").tobytes()
    out = np.frombuffer(watermark.spliced(early, whole, 50), "<i2")
    assert out.size == 300 and out[0] == 1000 and out[49] > 1900 and (out[50:] == 2000).all()
    assert (np.diff(out[:50].astype(int)) >= 0).all()  # a fade, no jump


class Kept:
    """An EncodedSink that keeps what it is given."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.whole: bytes | None = None

    async def audio(self, data: bytes, timing: Timing) -> None:
        self.parts.append(data)

    async def done(self, whole: bytes | None) -> None:
        self.whole = whole


async def test_a_streams_early_marked_first_piece_leaves_no_seam() -> None:
    """The first piece is marked on 0.9 s and sent; the rest, marked whole, must continue it sample for sample."""
    text = "The first sentence of a stream is marked in two steps. Then the second one."
    segments = segment_text(text, 200)
    audios = [speak(segment.text) for segment in segments]  # one take: Piper's noise makes every take differ
    files = []
    for stream in (False, True):
        encoder = SpeechEncoder(FormatRequest("wav"), 150, len(segments), "piper", split_first=stream)
        kept = Kept()
        stage = EncodeStage(encoder, stream, kept, "wav", watermark.mark_async)
        for segment, audio in zip(segments, audios, strict=True):
            await stage.add(segment, audio)
        await stage.finish()
        files.append(kept.whole if not stream else encoder.whole(b"".join(kept.parts)))
        assert (len(kept.parts) >= 3) is stream  # streamed: the first piece, the rest of segment 0, segment 1
    whole, streamed = (decode(file).samples.astype(np.int32) for file in files)
    assert whole.size == streamed.size and np.abs(whole - streamed).max() <= 2
    assert watermark.detect_file(files[1]).watermarked
