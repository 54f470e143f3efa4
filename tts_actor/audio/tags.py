"""The synthetic-speech mark: one comment, written into each container's own metadata field.

EU AI Act Art. 50(2) asks that synthetic audio be marked as such in a machine-readable way.
:class:`Mark` is what every container that has a metadata field carries (WAV ``LIST/INFO``,
MP3 ID3v2, Ogg Opus ``OpusTags``, FLAC Vorbis comment, MP4 ``udta/ilst``, WebM ``Tags``); ADTS
AAC and raw PCM have no such field. The byte layouts of the small tag blocks are here too, so
that the codecs and containers only place them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AI_GENERATED = "AI-generated"
VENDOR = "tts-actor"  # the vendor string of Vorbis comments


@dataclass(frozen=True)
class Mark:
    """What the file says about itself: who made it, with what."""

    comment: str  # contains "AI-generated", the backend, the model and the service version
    software: str  # "tts-actor <version>"


def synthetic_mark(backend: str, model: str, version: str) -> Mark:
    """The comment a file carries; a model name with odd characters is kept short and printable."""
    model = "".join(c for c in model if c.isprintable())[:200] or "-"
    comment = (
        f"{AI_GENERATED} speech (synthetic audio); backend={backend}; model={model}; generator=tts-actor {version}"
    )
    return Mark(comment, f"tts-actor {version}")


def vorbis_comments(vendor: str, mark: Mark | None) -> bytes:
    """A Vorbis comment block (Ogg Opus' OpusTags body, FLAC's VORBIS_COMMENT): vendor, then KEY=value pairs."""
    pairs = [] if mark is None else [f"COMMENT={mark.comment}", f"ENCODER={mark.software}"]
    out = struct.pack("<I", len(vendor.encode())) + vendor.encode() + struct.pack("<I", len(pairs))
    for pair in pairs:
        out += struct.pack("<I", len(pair.encode())) + pair.encode()
    return out


def _riff_text(chunk_id: bytes, text: str) -> bytes:
    data = text.encode() + b"\0"
    return chunk_id + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def wav_info_chunk(mark: Mark | None) -> bytes:
    """A WAV ``LIST/INFO`` chunk with ``ICMT`` (comment) and ``ISFT`` (software); empty without a mark."""
    if mark is None:
        return b""
    body = b"INFO" + _riff_text(b"ICMT", mark.comment) + _riff_text(b"ISFT", mark.software)
    return b"LIST" + struct.pack("<I", len(body)) + body


def _syncsafe(value: int) -> bytes:
    return bytes(((value >> 21) & 0x7F, (value >> 14) & 0x7F, (value >> 7) & 0x7F, value & 0x7F))


def _id3_frame(frame_id: bytes, body: bytes) -> bytes:
    return frame_id + _syncsafe(len(body)) + b"\0\0" + body


def id3v2_tag(mark: Mark | None) -> bytes:
    """An ID3v2.4 tag with ``COMM`` (comment) and ``TSSE`` (encoder settings), UTF-8; empty without a mark."""
    if mark is None:
        return b""
    comment = _id3_frame(b"COMM", b"\x03eng\0" + mark.comment.encode())
    software = _id3_frame(b"TSSE", b"\x03" + mark.software.encode())
    frames = comment + software
    return b"ID3\x04\x00\x00" + _syncsafe(len(frames)) + frames
