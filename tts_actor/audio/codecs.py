"""PCM -> encoded audio, one segment at a time: each format's encoder, and the front that opens one.

An encoder takes 16-bit mono PCM segment by segment and returns, for each, the next
byte range of one file: the concatenation of every output (and of :meth:`finish`) is a
valid file of the format. Each output ends on a whole Ogg page, MP3 frame, ADTS frame,
FLAC frame, MP4 fragment or WebM cluster (those two in :mod:`.app_formats`), so a stream
can be played while it arrives. The PyAV plumbing is :mod:`.segment_encoder`, the bytes
around the packets :mod:`.containers`, the metadata :mod:`.tags`, and what each format
takes :mod:`.formats`; this module says which goes with which format.
"""

from __future__ import annotations

import numpy as np

from tts_actor.audio import containers, tags
from tts_actor.audio.app_formats import M4aEncoder, WebmEncoder
from tts_actor.audio.formats import FORMATS, check_format, output_rate
from tts_actor.audio.segment_encoder import CodecEncoder, OpusCodec, SegmentEncoder
from tts_actor.audio.tags import VENDOR, Mark


class PcmEncoder(SegmentEncoder):
    """Raw 16-bit little-endian samples."""

    def _encode(self, samples: np.ndarray) -> bytes:
        return samples.astype("<i2").tobytes()

    def _finish(self) -> bytes:
        return b""


class WavEncoder(PcmEncoder):
    """A WAV stream announces an unknown length (0xFFFFFFFF); a whole file gets the real sizes.

    The mark is a ``LIST/INFO`` chunk between ``fmt `` and ``data``.
    """

    def __init__(self, fmt: str, in_rate: int, out_rate: int, mark: Mark | None = None) -> None:
        super().__init__(fmt, in_rate, out_rate, mark)
        self._header_sent = False
        self._info = tags.wav_info_chunk(mark)
        self.HEADER_BYTES = containers.WAV_HEADER_BYTES + len(self._info)

    def header(self, data_bytes: int = containers.UNKNOWN_LENGTH) -> bytes:
        return containers.wav_header(self.sample_rate, data_bytes, self._info)

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

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, mark: Mark | None = None
    ) -> None:
        super().__init__(fmt, in_rate, out_rate, bitrate, mark)
        self._frames = 0
        self._info_sent = False
        self._id3 = tags.id3v2_tag(mark)  # the mark, before the Info frame

    def _info_frame(self, first_header: bytes, frames: int, end_pad: int) -> bytes:
        return containers.lame_info_frame(first_header, self.sample_rate, frames, self.ENCODER_DELAY, end_pad)

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        body = b"".join(packets)
        self._frames += len(packets)
        if packets and not self._info_sent:
            self._info_sent = True
            self._first_header = packets[0][:4]
            return self._id3 + self._info_frame(self._first_header, 0, 0) + body
        return body

    def finish_whole(self, data: bytes) -> bytes:
        """The real frame count and end padding, so that a player trims the encoder's tail."""
        if not self._info_sent:
            return data
        skip = len(self._id3) + len(self._info_frame(self._first_header, 0, 0))
        end_pad = self._frames * self.frame_size - self.ENCODER_DELAY - self.samples_out
        info = self._info_frame(self._first_header, self._frames, max(0, min(end_pad, 4095)))
        return self._id3 + info + data[skip:]


class AacEncoder(CodecEncoder):
    """AAC-LC in ADTS frames: each packet with its 7-byte header, so any frame boundary is a cut point."""

    codec_name = "aac"
    sample_format = "fltp"

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        return b"".join(containers.adts_header(self.sample_rate, len(packet)) + packet for packet in packets)


class FlacEncoder(CodecEncoder):
    """FLAC: ``fLaC`` and the STREAMINFO block first, then frames. A stream's total length is 0 (unknown)."""

    codec_name = "flac"
    sample_format = "s16"

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, mark: Mark | None = None
    ) -> None:
        super().__init__(fmt, in_rate, out_rate, None, mark)
        self._header_sent = False

    def _header(self) -> bytes:
        comments = tags.vorbis_comments(VENDOR, self.mark) if self.mark is not None else None
        return containers.flac_stream_header(bytes(self.ctx.extradata), comments)

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        body = b"".join(packets)
        if not self._header_sent:
            self._header_sent = True
            return self._header() + body
        return body

    def finish_whole(self, data: bytes) -> bytes:
        """The total sample count in STREAMINFO, which a stream leaves 0 (unknown)."""
        return containers.flac_set_total_samples(data, self.samples_out)


class OpusEncoder(OpusCodec):
    """Opus in Ogg pages (RFC 7845), written here so that each segment ends on a flushed page.

    The last page's granule position is pre-skip plus the samples put in, which is how a
    player knows to drop the encoder's padding: the decoded length equals the input's.
    The mark is a COMMENT in OpusTags.
    """

    SERIAL = 0x54545321

    def __init__(
        self,
        fmt: str,
        in_rate: int,
        out_rate: int,
        bitrate: int | None = None,
        mark: Mark | None = None,
        application: str = "voip",
    ) -> None:
        super().__init__(fmt, in_rate, out_rate, bitrate or FORMATS["opus"].default_bitrate, mark, application)
        self._ogg = containers.OggStream(self.SERIAL)
        self._granule = 0
        opus_tags = b"OpusTags" + tags.vorbis_comments(VENDOR, mark)
        self._headers = self._ogg.page([self.opus_head], 0, 0x02) + self._ogg.page([opus_tags], 0, 0)

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        out = bytearray(self._headers)
        self._headers = b""
        frame_granules = self.frame_size * self.scale
        group: list[bytes] = []
        lacing = 0
        for index, packet in enumerate(packets):
            need = len(packet) // 255 + 1
            if group and lacing + need > 255:
                out += self._ogg.page(group, self._granule, 0)
                group, lacing = [], 0
            group.append(packet)
            lacing += need
            self._granule += frame_granules
            if index == len(packets) - 1:
                if last:  # the end: the granule says how many samples are real, the rest is padding
                    granule = min(self._granule, self.pre_skip + self.samples_out * self.scale)
                    out += self._ogg.page(group, granule, 0x04)
                else:
                    out += self._ogg.page(group, self._granule, 0)
        if last and not packets:
            out += self._ogg.page([], self.pre_skip + self.samples_out * self.scale, 0x04)
        return bytes(out)


_ENCODERS: dict[str, type[SegmentEncoder]] = {
    "wav": WavEncoder,
    "pcm": PcmEncoder,
    "opus": OpusEncoder,
    "mp3": Mp3Encoder,
    "aac": AacEncoder,
    "flac": FlacEncoder,
    "m4a": M4aEncoder,
    "webm": WebmEncoder,
}


def open_encoder(
    fmt: str, in_rate: int, sample_rate: int | None = None, bitrate: int | None = None, mark: Mark | None = None
) -> SegmentEncoder:
    """An encoder for ``fmt`` taking PCM at ``in_rate``; checked with :func:`check_format` first.

    ``mark``: the synthetic-speech comment, written where the format has a metadata field (not ADTS, not PCM).
    """
    problem = check_format(fmt, sample_rate, bitrate)
    if problem:
        raise ValueError(problem)
    rate = output_rate(fmt, in_rate, sample_rate)
    cls = _ENCODERS[fmt]
    if issubclass(cls, CodecEncoder):
        return cls(fmt, in_rate, rate, bitrate or FORMATS[fmt].default_bitrate, mark)
    return cls(fmt, in_rate, rate, mark)


def encode_whole(
    fmt: str,
    pcm: bytes,
    in_rate: int,
    sample_rate: int | None = None,
    bitrate: int | None = None,
    mark: Mark | None = None,
) -> bytes:
    """One PCM buffer to one whole file (tests, bench)."""
    encoder = open_encoder(fmt, in_rate, sample_rate, bitrate, mark)
    return encoder.finish_whole(encoder.encode(pcm) + encoder.finish())
