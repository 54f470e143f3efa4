"""The synthetic-speech mark: read back from every container that has a field for it, and absent without it."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from tests.support.container_reading import ebml_elements, mp4_boxes
from tts_actor.audio import codecs
from tts_actor.audio.tags import synthetic_mark

RATE = 22050
MARK = synthetic_mark("piper", "en_US-joe-medium", "9.8.7")
MARKED = ("wav", "mp3", "opus", "flac", "m4a", "webm")


def speechlike() -> bytes:
    t = np.arange(RATE) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def metadata(data: bytes) -> dict[str, str]:
    """What FFmpeg's demuxer reads: the container's tags and the stream's (Ogg keeps them on the stream)."""
    with av.open(io.BytesIO(data)) as container:
        return {k.lower(): v for k, v in {**container.metadata, **container.streams.audio[0].metadata}.items()}


def test_the_comment_names_what_made_the_audio() -> None:
    assert "AI-generated" in MARK.comment
    assert "backend=piper" in MARK.comment and "model=en_US-joe-medium" in MARK.comment
    assert "tts-actor 9.8.7" in MARK.comment and MARK.software == "tts-actor 9.8.7"


@pytest.mark.parametrize("fmt", MARKED)
@pytest.mark.parametrize("stream", [False, True])
def test_every_container_with_a_metadata_field_carries_the_mark(fmt: str, stream: bool) -> None:
    encoder = codecs.open_encoder(fmt, RATE, mark=MARK)
    data = encoder.encode(speechlike()) + encoder.finish()
    if not stream:
        data = encoder.finish_whole(data)
    assert metadata(data).get("comment") == MARK.comment, metadata(data)
    unmarked = codecs.encode_whole(fmt, speechlike(), RATE)
    assert "AI-generated" not in str(metadata(unmarked)) and b"AI-generated" not in unmarked


def test_each_container_holds_it_in_its_own_field() -> None:
    whole = {fmt: codecs.encode_whole(fmt, speechlike(), RATE, mark=MARK) for fmt in MARKED}
    comment = MARK.comment.encode()
    assert whole["wav"][36:40] == b"LIST" and b"INFOICMT" in whole["wav"][:400]
    assert whole["mp3"][:3] == b"ID3" and b"COMM" in whole["mp3"][:400]
    assert b"OpusTags" in whole["opus"][:400] and b"COMMENT=" + comment in whole["opus"][:600]
    assert whole["flac"][4] == 0x00 and whole["flac"][42] == 0x84  # STREAMINFO, then the last block: VORBIS_COMMENT
    boxes = dict(mp4_boxes(whole["m4a"]))
    assert boxes["moov/udta/meta/ilst/\xa9cmt/data"][8:] == comment
    tag_strings = [
        payload for name, payload in ebml_elements(whole["webm"]) if name == "18538067/1254C367/7373/67C8/4487"
    ]
    assert comment in tag_strings  # Segment/Tags/Tag/SimpleTag/TagString
    for fmt in ("aac", "pcm"):  # ADTS and raw samples have no field: nothing is written
        assert comment not in codecs.encode_whole(fmt, speechlike(), RATE, mark=MARK)
