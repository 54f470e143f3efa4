"""MP4 boxes for one mono AAC-LC track, written by hand: a whole file, or a fragmented stream.

A whole file is ``ftyp``, ``moov`` (with every sample's size and the one chunk's offset: it plays
while it downloads), then ``mdat``. A stream is an init segment (``ftyp`` and a ``moov`` with no
samples plus ``mvex``) and then one ``moof``/``mdat`` pair per segment; their concatenation is one
fragmented MP4 (what MediaSource takes). The encoder's priming is declared with an edit list, so the
decoded audio starts on the first synthesized sample; a whole file's edit also ends it on the last.
The synthetic-speech mark is an iTunes-style ``udta/meta/ilst`` (``©cmt``, ``©too``).
"""

from __future__ import annotations

import struct

from tts_actor.audio.tags import Mark

AAC_FRAME = 1024  # samples per AAC-LC packet
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = 0x55C4


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes((tag, len(body))) + body  # every descriptor here is under 128 bytes


def _esds(config: bytes, bitrate: int) -> bytes:
    decoder_specific = _descriptor(0x05, config)
    decoder_config = _descriptor(0x04, struct.pack(">BBBHII", 0x40, 0x15, 0, 0, bitrate, bitrate) + decoder_specific)
    es = _descriptor(0x03, struct.pack(">HB", 1, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def _mp4a(rate: int, config: bytes, bitrate: int) -> bytes:
    entry = bytes(6) + struct.pack(">HIIHHHHI", 1, 0, 0, 1, 16, 0, 0, rate << 16)
    return box(b"mp4a", entry, _esds(config, bitrate))


def _ilst_item(kind: bytes, text: str) -> bytes:
    return box(kind, box(b"data", struct.pack(">II", 1, 0), text.encode()))


def udta(mark: Mark | None) -> bytes:
    """The iTunes metadata box with the mark; empty without one."""
    if mark is None:
        return b""
    handler = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"mdir"), b"appl", bytes(9))
    ilst = box(b"ilst", _ilst_item(b"\xa9cmt", mark.comment), _ilst_item(b"\xa9too", mark.software))
    return box(b"udta", full_box(b"meta", 0, 0, handler, ilst))


def ftyp(fragmented: bool) -> bytes:
    brands = [b"M4A ", b"isom", b"iso2", b"mp41"] + ([b"iso6"] if fragmented else [])
    return box(b"ftyp", b"M4A ", struct.pack(">I", 0), *brands)


class TrackInfo:
    """What every box of the one track needs: rate, AudioSpecificConfig, bitrate, priming."""

    def __init__(self, rate: int, config: bytes, bitrate: int, priming: int, mark: Mark | None) -> None:
        self.rate = rate
        self.config = config
        self.bitrate = bitrate
        self.priming = priming
        self.mark = mark

    def moov(self, tables: bytes, media_samples: int, played: int, fragmented: bool) -> bytes:
        """``played``: samples after the priming that a player plays (0 in a stream: up to the media's end)."""
        header = struct.pack(">IIII", 0, 0, self.rate, played) + struct.pack(">IH", 0x10000, 0x100) + bytes(10)
        mvhd = full_box(b"mvhd", 0, 0, header, _MATRIX, bytes(24), struct.pack(">I", 2))
        tkhd = full_box(
            b"tkhd",
            0,
            3,
            struct.pack(">IIIII", 0, 0, 1, 0, played),
            bytes(8),
            struct.pack(">HHHH", 0, 1, 0x100, 0),
            _MATRIX,
            struct.pack(">II", 0, 0),
        )
        elst = full_box(b"elst", 0, 0, struct.pack(">IIiHH", 1, played, self.priming, 1, 0))
        mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, self.rate, media_samples, _LANGUAGE_UND, 0))
        hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, b"soun"), bytes(12), b"SoundHandler\0")
        dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
        stsd = full_box(b"stsd", 0, 0, struct.pack(">I", 1), _mp4a(self.rate, self.config, self.bitrate))
        stbl = box(b"stbl", stsd, tables)
        minf = box(b"minf", full_box(b"smhd", 0, 0, bytes(4)), dinf, stbl)
        trak = box(b"trak", tkhd, box(b"edts", elst), box(b"mdia", mdhd, hdlr, minf))
        mvex = b""
        if fragmented:
            mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, AAC_FRAME, 0, 0)))
        return box(b"moov", mvhd, trak, mvex, udta(self.mark))

    def init_segment(self) -> bytes:
        """A stream's start: no samples yet, the edit list skips the priming and plays to the media's end."""
        empty = b"".join(full_box(kind, 0, 0, struct.pack(">I", 0)) for kind in (b"stts", b"stsc", b"stco")) + full_box(
            b"stsz", 0, 0, struct.pack(">II", 0, 0)
        )
        return ftyp(True) + self.moov(empty, 0, 0, fragmented=True)

    def whole_file(self, packets: list[bytes], played: int) -> bytes:
        """A regular MP4: the sample tables in ``moov`` before the one ``mdat``."""
        count = len(packets)
        sizes = struct.pack(f">{count}I", *map(len, packets))
        stts = full_box(b"stts", 0, 0, struct.pack(">III", 1, count, AAC_FRAME) if count else struct.pack(">I", 0))
        stsc = full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, count, 1) if count else struct.pack(">I", 0))
        stsz = full_box(b"stsz", 0, 0, struct.pack(">II", 0, count), sizes)

        def build(offset: int) -> bytes:
            stco = full_box(b"stco", 0, 0, struct.pack(">II", 1, offset) if count else struct.pack(">I", 0))
            return ftyp(False) + self.moov(stts + stsc + stsz + stco, count * AAC_FRAME, played, fragmented=False)

        head = build(0)
        head = build(len(head) + 8)  # the offset of mdat's payload; the size of the head does not change
        return head + box(b"mdat", *packets)


def fragment(sequence: int, decode_time: int, packets: list[bytes]) -> bytes:
    """One ``moof``/``mdat`` pair: the packets of one segment, each ``AAC_FRAME`` samples long."""
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    trun_size = 12 + 8 + 4 * len(packets)

    def moof(data_offset: int) -> bytes:
        trun = full_box(
            b"trun",
            0,
            0x000201,
            struct.pack(">Ii", len(packets), data_offset),
            *(struct.pack(">I", len(p)) for p in packets),
        )
        assert len(trun) == trun_size
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), box(b"traf", tfhd, tfdt, trun))

    head = moof(0)
    head = moof(len(head) + 8)
    return head + box(b"mdat", *packets)
