"""MP4 boxes and WebM elements read back in tests by hand: what the container says, not what a demuxer makes of it."""

from __future__ import annotations

import struct
from collections.abc import Iterator

MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"udta", b"ilst", b"moof", b"traf", b"mvex"}


def mp4_boxes(data: bytes, offset: int = 0, end: int | None = None, path: str = "") -> Iterator[tuple[str, bytes]]:
    """Every box as ``(path, payload)``, depth first: ``moov/trak/edts/elst``."""
    end = len(data) if end is None else end
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8 and offset + size <= end, f"bad box {kind!r} at {offset}"
        name = f"{path}/{kind.decode('latin-1')}" if path else kind.decode("latin-1")
        payload = data[offset + 8 : offset + size]
        yield name, payload
        if kind in MP4_CONTAINERS or kind.startswith(b"\xa9"):
            yield from mp4_boxes(data, offset + 8, offset + size, name)
        elif kind == b"meta":  # a full box: its children after version and flags
            yield from mp4_boxes(data, offset + 12, offset + size, name)
        offset += size


def _vint(data: bytes, offset: int) -> tuple[int, int, bool]:
    first = data[offset]
    width = 8 - first.bit_length() + 1
    value = int.from_bytes(data[offset : offset + width], "big") & ((1 << (7 * width)) - 1)
    return value, width, value == (1 << (7 * width)) - 1


EBML_MASTERS = {
    0x1A45DFA3,
    0x18538067,
    0x1549A966,
    0x1654AE6B,
    0xAE,
    0xE1,
    0x1254C367,
    0x7373,
    0x63C0,
    0x67C8,
    0x1F43B675,
    0xA0,
}


def ebml_elements(data: bytes, offset: int = 0, end: int | None = None, path: str = "") -> Iterator[tuple[str, bytes]]:
    """Every element as ``(path of hex ids, payload)``; an unknown size runs to the parent's end or the next cluster."""
    end = len(data) if end is None else end
    while offset < end:
        first = data[offset]
        id_width = 8 - first.bit_length() + 1
        element_id = int.from_bytes(data[offset : offset + id_width], "big")
        size, size_width, unknown = _vint(data, offset + id_width)
        start = offset + id_width + size_width
        if unknown:
            stop = data.find(b"\x1f\x43\xb6\x75", start + 1) if element_id == 0x1F43B675 else -1
            stop = end if stop < 0 else stop
        else:
            stop = start + size
        assert stop <= end, f"element {element_id:x} at {offset} runs past its parent"
        name = f"{path}/{element_id:X}" if path else f"{element_id:X}"
        yield name, data[start:stop]
        if element_id in EBML_MASTERS:
            yield from ebml_elements(data, start, stop, name)
        offset = stop
