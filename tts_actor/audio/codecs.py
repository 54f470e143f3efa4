"""PCM -> encoded audio, in process with PyAV, one segment at a time.

An encoder takes 16-bit mono PCM segment by segment and returns, for each, the next
byte range of one file: the concatenation of every output (and of :meth:`finish`) is a
valid file of the format. Each output ends on a whole Ogg page, MP3 frame, ADTS frame
or FLAC frame, so a stream can be played while it arrives. The codecs run on PyAV's
codec contexts; the thin containers (Ogg pages, ADTS headers, the FLAC and WAV
headers) are written here, so nothing waits in a muxer's buffer at a segment's end.
"""

from __future__ import annotations

import abc
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
OPUS_RATES = (8000, 16000, 24000, 48000)  # libopus' own input rates; Ogg Opus always decodes at 48 kHz


@dataclass(frozen=True)
class FormatInfo:
    """What a caller may ask of a format."""

    content_type: str
    rates: tuple[int, ...]
    default_bitrate: int | None = None  # None: lossless, no bitrate
    bitrate_range: tuple[int, int] | None = None
    default_rate: int | None = None  # None: the engine's own rate


FORMATS: dict[str, FormatInfo] = {
    "wav": FormatInfo("audio/wav", SAMPLE_RATES),
    "pcm": FormatInfo("audio/L16", SAMPLE_RATES),
    # the predecessor's voice-message default: Ogg Opus, mono, 32 kbit/s, tuned for voice
    "opus": FormatInfo("audio/ogg; codecs=opus", OPUS_RATES, 32_000, (6_000, 256_000)),
    "mp3": FormatInfo("audio/mpeg", SAMPLE_RATES, 64_000, (8_000, 320_000)),
    "aac": FormatInfo("audio/aac", SAMPLE_RATES, 64_000, (16_000, 320_000)),
    "flac": FormatInfo("audio/flac", SAMPLE_RATES),
}


def check_format(fmt: str, sample_rate: int | None, bitrate: int | None) -> str | None:
    """None when the combination is offered, else a sentence naming what is."""
    info = FORMATS[fmt]
    if sample_rate is not None and sample_rate not in info.rates:
        return f"format {fmt} takes sample_rate {', '.join(map(str, info.rates))}, not {sample_rate}"
    if bitrate is not None:
        if info.bitrate_range is None:
            lossy = ", ".join(f for f, i in FORMATS.items() if i.bitrate_range)
            return f"format {fmt} is lossless and takes no bitrate; bitrate applies to {lossy}"
        low, high = info.bitrate_range
        if not low <= bitrate <= high:
            return f"format {fmt} takes bitrate {low} to {high} bit/s, not {bitrate}"
    return None


def output_rate(fmt: str, engine_rate: int, requested: int | None) -> int:
    """The rate the file will have: the request's, else the format's default, else the engine's own."""
    info = FORMATS[fmt]
    if requested is not None:
        return requested
    if info.default_rate is not None:
        return info.default_rate
    # the engine's rate, or the next one up the format takes (Opus: 22050 -> 24000, the whole band, less work)
    return min((rate for rate in info.rates if rate >= engine_rate), default=max(info.rates))


def content_type(fmt: str, rate: int) -> str:
    base = FORMATS[fmt].content_type
    return f"{base};rate={rate};channels=1" if fmt == "pcm" else base


class Resampler:
    """16-bit mono PCM from one rate to another with FFmpeg's resampler (filtered, not decimated)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import av

        self.in_rate = in_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def _frames_to_pcm(self, frames: list[Any]) -> np.ndarray:
        parts = [frame.to_ndarray().reshape(-1) for frame in frames]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)

    def resample(self, samples: np.ndarray) -> np.ndarray:
        import av

        if not len(samples):
            return samples
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        return self._frames_to_pcm(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._frames_to_pcm(self._resampler.resample(None))


class SegmentEncoder(abc.ABC):
    """One file, written segment by segment; see the module docstring."""

    def __init__(self, fmt: str, in_rate: int, out_rate: int) -> None:
        self.format = fmt
        self.in_rate = in_rate
        self.sample_rate = out_rate
        self.samples_out = 0  # samples at ``sample_rate`` handed to the codec
        self._resampler = Resampler(in_rate, out_rate) if in_rate != out_rate else None

    @property
    def content_type(self) -> str:
        return content_type(self.format, self.sample_rate)

    def encode(self, pcm: bytes) -> bytes:
        """The next bytes of the file for one segment's PCM (at ``in_rate``)."""
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.resample(samples)
        self.samples_out += len(samples)
        return self._encode(samples)

    def finish(self) -> bytes:
        """The file's last bytes: what the resampler and the codec still hold."""
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.int16)
        self.samples_out += len(tail)
        return self._encode(tail) + self._finish()

    def finish_whole(self, data: bytes) -> bytes:
        """A whole file (not a stream): fill in what a stream must leave unknown, such as lengths."""
        return data

    @abc.abstractmethod
    def _encode(self, samples: np.ndarray) -> bytes: ...

    @abc.abstractmethod
    def _finish(self) -> bytes: ...


class PcmEncoder(SegmentEncoder):
    """Raw 16-bit little-endian samples."""

    def _encode(self, samples: np.ndarray) -> bytes:
        return samples.astype("<i2").tobytes()

    def _finish(self) -> bytes:
        return b""


class WavEncoder(PcmEncoder):
    """A WAV stream announces an unknown length (0xFFFFFFFF); a whole file gets the real sizes."""

    HEADER_BYTES = 44

    def __init__(self, fmt: str, in_rate: int, out_rate: int) -> None:
        super().__init__(fmt, in_rate, out_rate)
        self._header_sent = False

    def header(self, data_bytes: int = 0xFFFFFFFF) -> bytes:
        riff = 0xFFFFFFFF if data_bytes == 0xFFFFFFFF else 36 + data_bytes
        rate = self.sample_rate
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16, b"data", data_bytes
        )

    def _encode(self, samples: np.ndarray) -> bytes:
        body = super()._encode(samples)
        if not self._header_sent:
            self._header_sent = True
            return self.header() + body
        return body

    def _finish(self) -> bytes:
        return b"" if self._header_sent else self._encode(np.zeros(0, np.int16))

    def finish_whole(self, data: bytes) -> bytes:
        return self.header(len(data) - self.HEADER_BYTES) + data[self.HEADER_BYTES :]


class CodecEncoder(SegmentEncoder):
    """A PyAV codec context fed whole codec frames; the remainder waits for the next segment."""

    codec_name: str
    sample_format: str

    def __init__(self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None) -> None:
        import av

        super().__init__(fmt, in_rate, out_rate)
        ctx = av.CodecContext.create(self.codec_name, "w")
        ctx.sample_rate = out_rate
        ctx.layout = "mono"
        ctx.format = self.sample_format
        if bitrate:
            ctx.bit_rate = bitrate
        self._configure(ctx)
        ctx.open()
        self.ctx = ctx
        self.frame_size = ctx.frame_size or 4096
        self._pending = np.zeros(0, np.int16)
        self._pts = 0

    def _configure(self, ctx: Any) -> None:
        """Codec options before opening."""

    def _frame(self, samples: np.ndarray) -> Any:
        import av

        if self.sample_format == "fltp":
            frame = av.AudioFrame.from_ndarray(
                (samples.astype(np.float32) / 32768.0).reshape(1, -1), format="fltp", layout="mono"
            )
        else:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format=self.sample_format, layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(samples)
        return frame

    def _encode(self, samples: np.ndarray) -> bytes:
        pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        whole = len(pending) - len(pending) % self.frame_size
        packets: list[bytes] = []
        for start in range(0, whole, self.frame_size):
            packets += [bytes(p) for p in self.ctx.encode(self._frame(pending[start : start + self.frame_size]))]
        self._pending = pending[whole:].copy()
        return self._wrap(packets, last=False)

    def _finish(self) -> bytes:
        packets: list[bytes] = []
        if len(self._pending):  # a short last frame: the codecs here take one
            packets += [bytes(p) for p in self.ctx.encode(self._frame(self._pending))]
            self._pending = np.zeros(0, np.int16)
        packets += [bytes(p) for p in self.ctx.encode(None)]
        return self._wrap(packets, last=True)

    @abc.abstractmethod
    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        """Frame the codec's packets in the format's container."""


class Mp3Encoder(CodecEncoder):
    """MPEG audio layer III frames, back to back, after a LAME "Info" frame that states the encoder delay.

    Players skip that delay (LAME's 576 samples plus the decoder's 529), so the audio starts on
    time; a whole file's Info frame also holds the frame count and the end padding, so it ends on
    time too. A stream cannot know its length up front: it ends at most one frame late.
    """

    codec_name = "libmp3lame"
    sample_format = "s16p"
    ENCODER_DELAY = 576  # LAME's, in samples
    DECODER_DELAY = 529

    def __init__(self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None) -> None:
        super().__init__(fmt, in_rate, out_rate, bitrate)
        self._frames = 0
        self._info_sent = False

    def _info_frame(self, first_header: bytes, frames: int, end_pad: int) -> bytes:
        mpeg1 = bool(first_header[1] & 0x08)
        # the first frame's header with the largest bitrate index (room for the tag), no CRC, no padding
        header = bytes((first_header[0], first_header[1] | 0x01, (first_header[2] & 0x0C) | 0xE0, first_header[3]))
        bitrate = 320_000 if mpeg1 else 160_000
        length = (144 if mpeg1 else 72) * bitrate // self.sample_rate
        side_info = bytes(17 if mpeg1 else 9)  # mono
        tag = b"Info" + struct.pack(">II", 0x01, frames)  # flags: frame count present
        lame = b"LAME3.100" + bytes(12) + ((self.ENCODER_DELAY << 12) | end_pad).to_bytes(3, "big")
        frame = header + side_info + tag + lame
        return frame + bytes(length - len(frame))

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        body = b"".join(packets)
        self._frames += len(packets)
        if packets and not self._info_sent:
            self._info_sent = True
            self._first_header = packets[0][:4]
            return self._info_frame(self._first_header, 0, 0) + body
        return body

    def finish_whole(self, data: bytes) -> bytes:
        """The real frame count and end padding, so that a player trims the encoder's tail."""
        if not self._info_sent:
            return data
        info = self._info_frame(self._first_header, 0, 0)
        end_pad = self._frames * self.frame_size - self.ENCODER_DELAY - self.samples_out
        return self._info_frame(self._first_header, self._frames, max(0, min(end_pad, 4095))) + data[len(info) :]


ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class AacEncoder(CodecEncoder):
    """AAC-LC in ADTS frames: each packet with its 7-byte header, so any frame boundary is a cut point."""

    codec_name = "aac"
    sample_format = "fltp"

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        rate_index = ADTS_RATES.index(self.sample_rate)
        out = bytearray()
        for packet in packets:
            length = len(packet) + 7
            out += bytes(
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
            out += packet
        return bytes(out)


class FlacEncoder(CodecEncoder):
    """FLAC: ``fLaC`` and the STREAMINFO block first, then frames. A stream's total length is 0 (unknown)."""

    codec_name = "flac"
    sample_format = "s16"

    def __init__(self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None) -> None:
        super().__init__(fmt, in_rate, out_rate, None)
        self._header_sent = False

    def _header(self) -> bytes:
        info = bytes(self.ctx.extradata)[:34]
        return b"fLaC" + bytes((0x80,)) + len(info).to_bytes(3, "big") + info

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        body = b"".join(packets)
        if not self._header_sent:
            self._header_sent = True
            return self._header() + body
        return body

    def finish_whole(self, data: bytes) -> bytes:
        """Write the total sample count into STREAMINFO (36 bits after rate, channels and depth)."""
        offset = 8 + 10  # "fLaC" + block header, then min/max block and frame sizes
        packed = int.from_bytes(data[offset : offset + 8], "big")
        packed = (packed & ~((1 << 36) - 1)) | (self.samples_out & ((1 << 36) - 1))
        return data[:offset] + packed.to_bytes(8, "big") + data[offset + 8 :]


class OpusEncoder(CodecEncoder):
    """Opus in Ogg pages (RFC 7845), written here so that each segment ends on a flushed page.

    The last page's granule position is pre-skip plus the samples put in, which is how a
    player knows to drop the encoder's padding: the decoded length equals the input's.
    """

    codec_name = "libopus"
    sample_format = "s16"
    SERIAL = 0x54545321

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, application: str = "voip"
    ) -> None:
        self.options = {"application": application, "frame_duration": "20"}
        super().__init__(fmt, in_rate, out_rate, bitrate or FORMATS["opus"].default_bitrate)
        self._page_seq = 0
        self._granule = 0
        self._scale = 48000 // out_rate  # granules count 48 kHz samples whatever the input rate
        head = bytes(self.ctx.extradata)
        self.pre_skip = int.from_bytes(head[10:12], "little")
        vendor = b"tts-actor"
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        self._headers = self._page([head], 0, 0x02) + self._page([tags], 0, 0)

    def _configure(self, ctx: Any) -> None:
        ctx.options = dict(self.options)  # voip: tuned for speech, as the voice-message pipeline had it

    def _page(self, packets: list[bytes], granule: int, flags: int) -> bytes:
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, flags, granule, self.SERIAL, self._page_seq, 0, len(lacing)
        ) + bytes(lacing)
        page = header + b"".join(packets)
        self._page_seq += 1
        crc = ogg_crc(page)
        return page[:22] + struct.pack("<I", crc) + page[26:]

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        out = bytearray(self._headers)
        self._headers = b""
        frame_granules = self.frame_size * self._scale
        group: list[bytes] = []
        lacing = 0
        for index, packet in enumerate(packets):
            need = len(packet) // 255 + 1
            if group and lacing + need > 255:
                out += self._page(group, self._granule, 0)
                group, lacing = [], 0
            group.append(packet)
            lacing += need
            self._granule += frame_granules
            if index == len(packets) - 1:
                if last:  # the end: the granule says how many samples are real, the rest is padding
                    granule = min(self._granule, self.pre_skip + self.samples_out * self._scale)
                    out += self._page(group, granule, 0x04)
                else:
                    out += self._page(group, self._granule, 0)
        if last and not packets:
            out += self._page([], self.pre_skip + self.samples_out * self._scale, 0x04)
        return bytes(out)


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, no xor), computed by zlib on bit-reversed bytes."""
    reflected = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


_ENCODERS: dict[str, type[SegmentEncoder]] = {
    "wav": WavEncoder,
    "pcm": PcmEncoder,
    "opus": OpusEncoder,
    "mp3": Mp3Encoder,
    "aac": AacEncoder,
    "flac": FlacEncoder,
}


def open_encoder(fmt: str, in_rate: int, sample_rate: int | None = None, bitrate: int | None = None) -> SegmentEncoder:
    """An encoder for ``fmt`` taking PCM at ``in_rate``; checked with :func:`check_format` first."""
    problem = check_format(fmt, sample_rate, bitrate)
    if problem:
        raise ValueError(problem)
    rate = output_rate(fmt, in_rate, sample_rate)
    cls = _ENCODERS[fmt]
    if issubclass(cls, CodecEncoder):
        return cls(fmt, in_rate, rate, bitrate or FORMATS[fmt].default_bitrate)
    return cls(fmt, in_rate, rate)


def encode_whole(
    fmt: str, pcm: bytes, in_rate: int, sample_rate: int | None = None, bitrate: int | None = None
) -> bytes:
    """One PCM buffer to one whole file (tests, bench)."""
    encoder = open_encoder(fmt, in_rate, sample_rate, bitrate)
    return encoder.finish_whole(encoder.encode(pcm) + encoder.finish())
