"""WebM (Matroska) elements for one mono Opus track, written by hand: a whole file, or a stream.

A stream is the EBML header, a Segment of unknown size with Info, Tracks and Tags, then one Cluster
of unknown size per segment (a parser ends a cluster at the next one): what a browser's MediaSource
and ``<audio>`` take as it arrives. A whole file states its sizes and its Duration. The encoder's
pre-skip is the track's CodecDelay, and the last block's DiscardPadding drops the last frame's padding,
so the decoded audio is as long as the synthesized audio. The mark is a Tags element (COMMENT, ENCODER).
"""

from __future__ import annotations

import struct

from tts_actor.audio.tags import Mark

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
SEEK_PRE_ROLL_NS = 80_000_000  # what the Matroska Opus mapping asks for
CLUSTER_SPAN_MS = 30_000  # a block's time is 16 bits of ms after its cluster's


def _size(length: int) -> bytes:
    for width in range(1, 9):
        if length < (1 << (7 * width)) - 1:
            return (length | (1 << (7 * width))).to_bytes(width, "big")
    raise ValueError(f"element of {length} bytes")


def element(element_id: int, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + _size(len(body)) + body


def uint(element_id: int, value: int) -> bytes:
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def text(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode())


def unknown_size(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + UNKNOWN_SIZE


EBML_HEADER = element(
    0x1A45DFA3,
    uint(0x4286, 1),
    uint(0x42F7, 1),
    uint(0x42F2, 4),
    uint(0x42F3, 8),
    text(0x4282, "webm"),
    uint(0x4287, 4),
    uint(0x4285, 2),
)
SEGMENT, CLUSTER = 0x18538067, 0x1F43B675


def tags(mark: Mark | None) -> bytes:
    """The file's Tags with the mark (a Tag with empty Targets: the whole file); empty without one."""
    if mark is None:
        return b""
    simple = [
        element(0x67C8, text(0x45A3, name), text(0x4487, value))
        for name, value in (
            ("COMMENT", mark.comment),
            ("ENCODER", mark.software),
        )
    ]
    return element(0x1254C367, element(0x7373, element(0x63C0), *simple))


def head(opus_head: bytes, pre_skip: int, software: str, mark: Mark | None, duration_ms: float | None) -> bytes:
    """Info, Tracks and Tags: what precedes the first cluster (Duration only when known)."""
    info = [uint(0x2AD7B1, 1_000_000), text(0x4D80, software), text(0x5741, software)]
    if duration_ms is not None:
        info.append(element(0x4489, struct.pack(">d", duration_ms)))
    audio = element(0xE1, element(0xB5, struct.pack(">d", 48000.0)), uint(0x9F, 1))
    track = element(
        0xAE,
        uint(0xD7, 1),
        uint(0x73C5, 1),
        uint(0x83, 2),
        text(0x86, "A_OPUS"),
        element(0x63A2, opus_head),
        uint(0x56AA, pre_skip * 1_000_000_000 // 48000),
        uint(0x56BB, SEEK_PRE_ROLL_NS),
        audio,
    )
    return element(0x1549A966, *info) + element(0x1654AE6B, track) + tags(mark)


def block(packet: bytes, relative_ms: int, discard_ns: int | None) -> bytes:
    """A SimpleBlock; the last one, with its DiscardPadding, a BlockGroup."""
    if discard_ns is None:
        return element(0xA3, b"\x81", struct.pack(">hB", relative_ms, 0x80), packet)
    inner = element(0xA1, b"\x81", struct.pack(">hB", relative_ms, 0), packet)
    return element(0xA0, inner, element(0x75A2, discard_ns.to_bytes(8, "big", signed=True)))


def clusters(blocks: list[tuple[int, bytes, int | None]], known_size: bool) -> bytes:
    """``(time_ms, packet, discard_ns)`` blocks in clusters of at most :data:`CLUSTER_SPAN_MS` each."""
    out = bytearray()
    start = 0
    while start < len(blocks):
        base = blocks[start][0]
        end = start
        while end < len(blocks) and blocks[end][0] - base < CLUSTER_SPAN_MS:
            end += 1
        body = uint(0xE7, base) + b"".join(block(p, t - base, d) for t, p, d in blocks[start:end])
        out += element(CLUSTER, body) if known_size else unknown_size(CLUSTER) + body
        start = end
    return bytes(out)
