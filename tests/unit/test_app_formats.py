"""M4A (AAC-LC in MP4) and WebM (Opus): decoded whole and streamed with PyAV, and their boxes and elements read back."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from tests.support.audio_checks import decode, dominant_hz
from tests.support.container_reading import ebml_elements, mp4_boxes
from tts_actor.audio import codecs, formats

RATE = 22050  # Piper's
SECONDS = 2.345


def tone(seconds: float = SECONDS, hz: float = 440.0) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 9000).astype("<i2").tobytes()


def segment_wise(fmt: str, pcm: bytes, rate: int | None = None, parts: int = 4) -> tuple[list[bytes], bytes]:
    """A stream's outputs (one per segment, then the tail) and the whole file made from the same encoder."""
    encoder = codecs.open_encoder(fmt, RATE, rate)
    step = len(pcm) // parts // 2 * 2
    outputs = [encoder.encode(pcm[i * step : (i + 1) * step if i < parts - 1 else None]) for i in range(parts)]
    outputs.append(encoder.finish())
    return outputs, encoder.finish_whole(b"".join(outputs))


def aac_tail_ms(rate: int) -> float:
    """PyAV (FFmpeg) trims the priming by the edit list but plays the last AAC frame whole: up to 1023 samples."""
    return 1024 / rate * 1000


CASES = [
    (fmt, rate)
    for fmt in ("m4a", "webm")
    for rate in (None, *formats.SAMPLE_RATES)
    if formats.check_format(fmt, rate, None) is None
]


@pytest.mark.parametrize(("fmt", "rate"), CASES)
def test_whole_and_streamed_files_decode_to_the_input_length(fmt: str, rate: int | None) -> None:
    outputs, whole = segment_wise(fmt, tone(), rate)
    for name, data in (("whole", whole), ("stream", b"".join(outputs))):
        decoded = decode(data)
        assert decoded.rate == (48000 if fmt == "webm" else rate or RATE)
        late = decoded.duration_ms - SECONDS * 1000
        if fmt == "webm":  # CodecDelay and DiscardPadding: exact
            assert abs(late) <= 30, f"{name}@{rate}: {late:+.1f} ms"
        else:  # the priming is skipped (never early, never 1024 samples late); the end is within one frame
            assert -30 <= late <= aac_tail_ms(decoded.rate), f"{name}@{rate}: {late:+.1f} ms"
        assert abs(dominant_hz(decoded.samples, decoded.rate) - 440) < 10
    # every prefix ending on a segment's output decodes on its own: a fragment or a cluster is never cut
    for end in range(2, len(outputs)):
        assert decode(b"".join(outputs[:end])).samples.size > 0


def test_a_whole_m4a_is_a_regular_mp4_with_its_real_duration_and_the_priming_in_an_edit_list() -> None:
    _, whole = segment_wise("m4a", tone(), 24000)
    boxes = dict(mp4_boxes(whole))
    assert [name for name, _ in mp4_boxes(whole) if "/" not in name] == ["ftyp", "moov", "mdat"]
    assert "moof" not in boxes and "moov/mvex" not in boxes
    count, media_time = struct.unpack(">I4xi", boxes["moov/trak/edts/elst"][4:16])
    played = struct.unpack(">I", boxes["moov/trak/edts/elst"][8:12])[0]
    assert (count, media_time) == (1, 1024)  # the encoder's priming skipped
    assert played == int(SECONDS * 24000)  # and the track plays exactly the input
    timescale, duration = struct.unpack(">II", boxes["moov/mvhd"][12:20])
    assert timescale == 24000 and duration == played
    with av.open(io.BytesIO(whole)) as container:  # what a player shows before it plays
        assert abs(container.duration / 1e6 - SECONDS) < 0.03
    # one chunk: its offset is where mdat's payload starts
    offset = struct.unpack(">I", boxes["moov/trak/mdia/minf/stbl/stco"][8:12])[0]
    assert whole[offset - 4 : offset] == b"mdat"


def test_an_m4a_stream_is_an_init_segment_then_one_fragment_per_segment() -> None:
    outputs, _ = segment_wise("m4a", tone(), None, parts=4)
    assert [name for name, _ in mp4_boxes(outputs[0]) if "/" not in name][:2] == ["ftyp", "moov"]
    assert "moov/mvex/trex" in dict(mp4_boxes(outputs[0]))
    sequences = []
    for output in outputs:
        for name, payload in mp4_boxes(output):
            if name == "moof/mfhd":
                sequences.append(struct.unpack(">I", payload[4:8])[0])
    assert sequences == list(range(1, len(sequences) + 1)) and len(sequences) >= 4


def test_a_webm_stream_is_one_cluster_per_segment_and_a_whole_file_states_its_duration() -> None:
    outputs, whole = segment_wise("webm", tone(), None)
    stream = b"".join(outputs)
    clusters = [name for name, _ in ebml_elements(stream) if name == "18538067/1F43B675"]
    assert len(clusters) == sum(1 for o in outputs if b"\x1f\x43\xb6\x75" in o) >= 4
    elements = dict(ebml_elements(whole))
    assert elements["1A45DFA3/4282"] == b"webm"
    assert elements["18538067/1654AE6B/AE/86"] == b"A_OPUS"
    duration_ms = struct.unpack(">d", elements["18538067/1549A966/4489"])[0]
    assert abs(duration_ms - SECONDS * 1000) < 1
    assert "18538067/1549A966/4489" not in dict(ebml_elements(stream))  # a stream does not know it yet
    # the last block says how much of its frame is padding
    assert any(name.endswith("A0/75A2") for name, _ in ebml_elements(whole))
