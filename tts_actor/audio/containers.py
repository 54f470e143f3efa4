"""The thin containers around the codecs' packets, written by hand.

WAV and FLAC headers (the tag blocks inside them: :mod:`.tags`), the LAME "Info" frame of
an MP3, ADTS headers for AAC and Ogg pages for Opus are a few bytes each. Writing them here (not through a muxer) means
nothing waits in a muxer's buffer at a segment's end: each segment's bytes end on a
whole frame or page and can be sent at once. Nothing here knows about PyAV.
"""

from __future__ import annotations

import struct
import zlib

UNKNOWN_LENGTH = 0xFFFFFFFF  # what a WAV stream announces before its length is known
WAV_HEADER_BYTES = 44
ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def wav_header(sample_rate: int, data_bytes: int = UNKNOWN_LENGTH, info: bytes = b"") -> bytes:
    """A 16-bit mono PCM WAV header, ``info`` (a LIST chunk) before ``data``; an unknown length stays 0xFFFFFFFF."""
    riff = UNKNOWN_LENGTH if data_bytes == UNKNOWN_LENGTH else 36 + len(info) + data_bytes
    fmt = struct.pack(
        "<4sI4s4sIHHIIHH",
        b"RIFF",
        riff,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
    )
    return fmt + info + struct.pack("<4sI", b"data", data_bytes)


def lame_info_frame(first_header: bytes, sample_rate: int, frames: int, encoder_delay: int, end_pad: int) -> bytes:
    """A silent MP3 frame holding LAME's "Info" tag: frame count, encoder delay and end padding."""
    mpeg1 = bool(first_header[1] & 0x08)
    # the first frame's header with the largest bitrate index (room for the tag), no CRC, no padding
    header = bytes((first_header[0], first_header[1] | 0x01, (first_header[2] & 0x0C) | 0xE0, first_header[3]))
    bitrate = 320_000 if mpeg1 else 160_000
    length = (144 if mpeg1 else 72) * bitrate // sample_rate
    side_info = bytes(17 if mpeg1 else 9)  # mono
    tag = b"Info" + struct.pack(">II", 0x01, frames)  # flags: frame count present
    lame = b"LAME3.100" + bytes(12) + ((encoder_delay << 12) | end_pad).to_bytes(3, "big")
    frame = header + side_info + tag + lame
    return frame + bytes(length - len(frame))


def adts_header(sample_rate: int, packet_bytes: int) -> bytes:
    """The 7-byte ADTS header of one mono AAC-LC packet: any frame boundary is then a cut point."""
    rate_index = ADTS_RATES.index(sample_rate)
    length = packet_bytes + 7
    return bytes(
        (
            0xFF,
            0xF1,  # MPEG-4, layer 0, no CRC
            (1 << 6) | (rate_index << 2),  # AAC LC, rate, channel config high bit 0
            (1 << 6) | (length >> 11),  # one channel
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        )
    )


def flac_stream_header(extradata: bytes, comments: bytes | None = None) -> bytes:
    """``fLaC``, the STREAMINFO block (the codec's extradata), then a VORBIS_COMMENT block when given."""
    info = extradata[:34]
    head = b"fLaC" + bytes((0x00 if comments else 0x80,)) + len(info).to_bytes(3, "big") + info
    return head + (bytes((0x84,)) + len(comments).to_bytes(3, "big") + comments if comments else b"")


def flac_set_total_samples(data: bytes, samples: int) -> bytes:
    """Write the total sample count into STREAMINFO (36 bits after rate, channels and depth)."""
    offset = 8 + 10  # "fLaC" + block header, then min/max block and frame sizes
    packed = int.from_bytes(data[offset : offset + 8], "big")
    packed = (packed & ~((1 << 36) - 1)) | (samples & ((1 << 36) - 1))
    return data[:offset] + packed.to_bytes(8, "big") + data[offset + 8 :]


class OggStream:
    """One logical Ogg bitstream: numbers its pages and writes each with its CRC (RFC 3533)."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self._sequence = 0

    def page(self, packets: list[bytes], granule: int, flags: int) -> bytes:
        """One page holding ``packets`` whole (their lacing must fit in 255 values)."""
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, flags, granule, self.serial, self._sequence, 0, len(lacing)
        ) + bytes(lacing)
        page = header + b"".join(packets)
        self._sequence += 1
        crc = ogg_crc(page)
        return page[:22] + struct.pack("<I", crc) + page[26:]


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, no xor), computed by zlib on bit-reversed bytes."""
    reflected = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)
