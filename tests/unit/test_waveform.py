"""The waveform: peaks of equal slices of the audio, 0-255, kept from the PCM as it passes."""

from __future__ import annotations

import numpy as np
import pytest

from tts_actor.audio import waveform
from tts_actor.audio.encoding import FormatRequest, SpeechEncoder
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment


def pcm(values: np.ndarray) -> bytes:
    return values.astype("<i2").tobytes()


def test_each_point_is_the_peak_of_its_slice_scaled_to_255() -> None:
    samples = np.zeros(64 * 1000, np.int32)
    samples[500] = -32768  # full scale, negative: 255 as well
    samples[64_000 - 10] = 16384  # half scale in the last slice
    wave = waveform.Waveform()
    for part in np.array_split(samples, 7):  # fed in uneven pieces, as segments come
        wave.add(pcm(part))
    points = wave.points(64)
    assert len(points) == 64
    assert points[0] == 255 and points[63] == 128 and set(points[1:63]) == {0}


@pytest.mark.parametrize("count", [16, 64, 100, 256])
def test_points_match_a_direct_computation(count: int) -> None:
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal(22050 * 3) * 3000 * np.linspace(0, 1, 22050 * 3)).clip(-32767, 32767)
    wave = waveform.Waveform()
    wave.add(pcm(samples))
    blocks = np.abs(samples.astype(np.int32))
    blocks = np.concatenate([blocks, np.zeros(-len(blocks) % waveform.BLOCK, np.int32)]).reshape(-1, waveform.BLOCK)
    direct = [blocks[i * len(blocks) // count : (i + 1) * len(blocks) // count].max() for i in range(count)]
    assert list(wave.points(count)) == [min(255, round(p * 255 / 32767)) for p in direct]


def test_short_audio_still_gives_every_point() -> None:
    wave = waveform.Waveform()
    wave.add(pcm(np.full(40, 32767)))  # two blocks, the second partial
    assert wave.points(256) == bytes([255]) * 256
    assert waveform.Waveform().points(16) == bytes(16)


def test_a_cached_waveform_reduces_exactly_to_points_that_divide_it() -> None:
    rng = np.random.default_rng(3)
    wave = waveform.Waveform()
    wave.add(pcm(rng.integers(-20000, 20000, 100_000)))
    fine = wave.points(waveform.CACHED_POINTS)
    for count in (16, 32, 64, 128, 256):
        assert waveform.fewer_points(fine, count) == wave.points(count)
    assert len(waveform.fewer_points(fine, 100)) == 100
    assert waveform.decode(waveform.encode(fine)) == fine


def test_the_encoder_keeps_the_waveform_of_the_whole_timeline_pauses_included() -> None:
    request = FormatRequest("wav", waveform_points=16)
    encoder = SpeechEncoder(request, silence_ms=1000, segment_count=2, backend="piper", split_first=False)
    loud = Audio(pcm(np.full(22050, 30000)), 22050)
    for index in range(2):  # 1 s of sound, 1 s of pause, 1 s of sound
        for piece in encoder.pieces(Segment(index, "x", 0, 1), loud):
            encoder.encode(piece)
    points = encoder.waveform_bytes()
    assert len(points) == 16 and encoder.duration_ms == 3000
    assert min(points[:5]) > 200 and max(points[6:10]) == 0 and min(points[11:]) > 200
