"""Every format decoded back with PyAV: length against the PCM, lossless exactness, pitch, valid framing."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from tests.support.audio_checks import decode, dominant_hz
from tts_actor.audio import codecs, containers, formats
from tts_actor.wire.messages import AudioFormat

RATE = 22050  # Piper's
TOLERANCE_MS = 30


def tone(seconds: float, hz: float = 440.0, rate: int = RATE) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * 9000).astype("<i2").tobytes()


def segment_wise(fmt: str, pcm: bytes, rate: int | None = None, parts: int = 4) -> list[bytes]:
    """The file as a stream writes it: one output per segment, then the tail."""
    encoder = codecs.open_encoder(fmt, RATE, rate)
    step = len(pcm) // parts // 2 * 2
    outputs = [encoder.encode(pcm[i * step : (i + 1) * step if i < parts - 1 else None]) for i in range(parts)]
    return [*outputs, encoder.finish()]


def expected_extra_ms(fmt: str, rate: int) -> float:
    """ADTS has no field for the encoder's priming: players play its 1024 samples first."""
    return 1024 / rate * 1000 if fmt == "aac" else 0.0


def tolerance_ms(fmt: str, rate: int) -> float:
    """30 ms; AAC's last frame is padded whole and ADTS cannot say so (128 ms at 8 kHz)."""
    return max(TOLERANCE_MS, 1024 / rate * 1000) if fmt == "aac" else TOLERANCE_MS


CASES = [
    (fmt, rate)
    for fmt in ("wav", "flac", "opus", "mp3", "aac")
    for rate in (None, *formats.SAMPLE_RATES)
    if formats.check_format(fmt, rate, None) is None
]


@pytest.mark.parametrize(("fmt", "rate"), CASES)
def test_whole_files_decode_to_the_pcm_length(fmt: str, rate: int | None) -> None:
    pcm = tone(2.345)
    data = codecs.encode_whole(fmt, pcm, RATE, rate)
    decoded = decode(data)
    expected_rate = 48000 if fmt == "opus" else rate or RATE  # Ogg Opus always decodes at 48 kHz
    assert decoded.rate == expected_rate
    late_ms = decoded.duration_ms - 2345
    assert abs(late_ms - expected_extra_ms(fmt, decoded.rate)) <= tolerance_ms(fmt, decoded.rate), f"{late_ms:+.1f} ms"
    assert abs(dominant_hz(decoded.samples, decoded.rate) - 440) < 10


@pytest.mark.parametrize(("fmt", "rate"), CASES)
def test_a_stream_written_segment_by_segment_is_one_valid_file(fmt: str, rate: int | None) -> None:
    pcm = tone(2.345)
    outputs = segment_wise(fmt, pcm, rate)
    decoded = decode(b"".join(outputs))
    late_ms = decoded.duration_ms - 2345 - expected_extra_ms(fmt, decoded.rate)
    if fmt == "mp3":  # a stream cannot state its end padding up front: never short, at most ~2 frames long
        assert -TOLERANCE_MS <= late_ms <= 2 * 1152 / decoded.rate * 1000, late_ms
    else:
        assert abs(late_ms) <= tolerance_ms(fmt, decoded.rate), f"{fmt}@{rate}: {late_ms:+.1f} ms"
    # every prefix that ends on a segment's output decodes on its own: nothing is cut mid-frame
    for end in range(1, len(outputs)):
        prefix = b"".join(outputs[:end])
        if prefix:
            assert decode(prefix).samples.size > 0


@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm"])
def test_lossless_formats_round_trip_exactly(fmt: str) -> None:
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal(RATE) * 6000).clip(-32768, 32767).astype("<i2")
    data = codecs.encode_whole(fmt, samples.tobytes(), RATE)
    got = np.frombuffer(data, "<i2") if fmt == "pcm" else decode(data).samples
    assert np.array_equal(got, samples)
    streamed = b"".join(segment_wise(fmt, samples.tobytes()))
    got = np.frombuffer(streamed, "<i2") if fmt == "pcm" else decode(streamed).samples
    assert np.array_equal(got, samples)


def test_resampling_keeps_pitch_and_length() -> None:
    pcm = tone(1.0, 1000.0)
    for rate in (8000, 16000, 44100, 48000):
        data = codecs.encode_whole("wav", pcm, RATE, rate)
        decoded = decode(data)
        assert decoded.rate == rate
        assert abs(decoded.samples.size - rate) <= 2
        assert abs(dominant_hz(decoded.samples, rate) - 1000) < 5


def test_defaults_match_the_pipeline() -> None:
    opus = codecs.open_encoder("opus", RATE)
    assert (opus.sample_rate, opus.ctx.bit_rate) == (24000, 32000)  # 22050 rounded up to an Opus rate
    assert opus.options["application"] == "voip"
    voice = codecs.encode_whole("opus", tone(1.0), RATE)
    music = codecs.OpusEncoder("opus", RATE, 48000, 32000, application="audio")
    assert music.encode(tone(1.0)) + music.finish() != voice  # the setting reaches libopus
    assert codecs.open_encoder("mp3", RATE).ctx.bit_rate == 64000
    assert codecs.open_encoder("wav", RATE).sample_rate == RATE
    sizes = [
        len(codecs.encode_whole(fmt, tone(5.0), RATE, None, rate)) for fmt, rate in (("opus", 16000), ("opus", 64000))
    ]
    assert sizes[0] * 2 < sizes[1]  # the bitrate reaches the encoder


def test_content_types() -> None:
    expected = {
        AudioFormat.WAV: "audio/wav",
        AudioFormat.PCM: "audio/L16",
        AudioFormat.OPUS: "audio/ogg; codecs=opus",
        AudioFormat.MP3: "audio/mpeg",
        AudioFormat.AAC: "audio/aac",
        AudioFormat.FLAC: "audio/flac",
        AudioFormat.M4A: "audio/mp4",
        AudioFormat.WEBM: "audio/webm; codecs=opus",
    }
    assert {f: f.content_type for f in AudioFormat} == expected
    assert codecs.open_encoder("pcm", RATE, 16000).content_type == "audio/L16;rate=16000;channels=1"


def test_unsupported_combinations_name_what_is_supported() -> None:
    assert "8000, 16000, 24000, 48000" in str(formats.check_format("opus", 22050, None))
    assert "lossless" in str(formats.check_format("flac", None, 64000))
    assert "8000 to 320000" in str(formats.check_format("mp3", None, 1000))
    assert formats.check_format("mp3", 44100, 128000) is None
    with pytest.raises(ValueError, match="sample_rate"):
        codecs.open_encoder("opus", RATE, 44100)


def test_a_wav_stream_announces_an_unknown_length_and_a_whole_file_the_real_one() -> None:
    pcm = tone(0.5)
    streamed = b"".join(segment_wise("wav", pcm))
    assert struct.unpack("<I", streamed[40:44])[0] == 0xFFFFFFFF
    whole = codecs.encode_whole("wav", pcm, RATE)
    assert struct.unpack("<I", whole[40:44])[0] == len(pcm)
    import wave

    with wave.open(io.BytesIO(whole)) as w:
        assert w.getnframes() == len(pcm) // 2


def _slow_ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def test_ogg_pages_are_whole_with_valid_checksums_and_the_last_granule_trims_the_padding() -> None:
    assert containers.ogg_crc(b"OggS tts-actor") == _slow_ogg_crc(b"OggS tts-actor")
    pcm = tone(1.0)
    outputs = segment_wise("opus", pcm)
    for output in outputs:  # each output is a run of whole pages
        offset = 0
        while offset < len(output):
            assert output[offset : offset + 4] == b"OggS"
            segments = output[offset + 26]
            lacing = output[offset + 27 : offset + 27 + segments]
            size = 27 + segments + sum(lacing)
            page = output[offset : offset + size]
            crc = struct.unpack("<I", page[22:26])[0]
            assert crc == _slow_ogg_crc(page[:22] + b"\0\0\0\0" + page[26:])
            last_flags, last_granule = page[5], struct.unpack("<q", page[6:14])[0]
            offset += size
        assert offset == len(output)
    assert last_flags & 0x04  # end of stream
    pre_skip = 312
    assert last_granule == pre_skip + 48000  # one second at 48 kHz, after the pre-skip
