"""The formats chat apps and browsers play natively: AAC-LC in MP4 (``m4a``) and Opus in WebM (``webm``).

Like every encoder here, each segment's output ends on a unit a player can take at once: an MP4
fragment (``moof``/``mdat``) or a WebM cluster, after the init segment or the WebM header on the
first. A whole reply is rewritten from the packets kept on the way (they are small: compressed
audio): a regular MP4 with its sample tables and real duration, a WebM with its sizes and Duration.
The boxes and elements are :mod:`.mp4` and :mod:`.webm`.
"""

from __future__ import annotations

from tts_actor.audio import mp4, webm
from tts_actor.audio.segment_encoder import CodecEncoder, OpusCodec
from tts_actor.audio.tags import VENDOR, Mark

AAC_PRIMING = 1024  # FFmpeg's AAC encoder starts with this many samples of its own (its initial_padding)


class M4aEncoder(CodecEncoder):
    """AAC-LC in MP4: a stream is fragmented MP4, a whole file a regular one; the priming is an edit list."""

    codec_name = "aac"
    sample_format = "fltp"

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, mark: Mark | None = None
    ) -> None:
        super().__init__(fmt, in_rate, out_rate, bitrate, mark)
        self.track = mp4.TrackInfo(out_rate, bytes(self.ctx.extradata), self.ctx.bit_rate, AAC_PRIMING, mark)
        self._packets: list[bytes] = []
        self._fragments = 0
        self._init_sent = False

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        out = b""
        if not self._init_sent:
            self._init_sent = True
            out = self.track.init_segment()
        if packets:
            decode_time = len(self._packets) * mp4.AAC_FRAME
            self._packets += packets
            out += mp4.fragment(1 + self._fragments, decode_time, packets)
            self._fragments += 1
        return out

    def finish_whole(self, data: bytes) -> bytes:
        """A regular MP4 of the same packets: sample tables, and an edit that plays exactly the input's length."""
        return self.track.whole_file(self._packets, self.samples_out)


class WebmEncoder(OpusCodec):
    """Opus in WebM: one cluster per segment; CodecDelay and the last block's DiscardPadding trim to the input."""

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, mark: Mark | None = None
    ) -> None:
        super().__init__(fmt, in_rate, out_rate, bitrate, mark)
        self._blocks: list[tuple[int, bytes, int | None]] = []  # (time ms, packet, discard ns)
        self._header_sent = False

    def _head(self, duration_ms: float | None) -> bytes:
        return webm.head(self.opus_head, self.pre_skip, VENDOR, self.mark, duration_ms)

    def _wrap(self, packets: list[bytes], last: bool) -> bytes:
        out = b""
        if not self._header_sent:
            self._header_sent = True
            out = webm.EBML_HEADER + webm.unknown_size(webm.SEGMENT) + self._head(None)
        first = len(self._blocks)
        for index, packet in enumerate(packets):
            discard = self._discard_ns(first + len(packets)) if last and index == len(packets) - 1 else None
            self._blocks.append(((first + index) * self.FRAME_MS, packet, discard))
        return out + webm.clusters(self._blocks[first:], known_size=False)

    def _discard_ns(self, packets: int) -> int | None:
        """The last packet's padding: what it decodes past pre-skip plus the samples put in."""
        padding = packets * self.frame_size * self.scale - self.pre_skip - self.samples_out * self.scale
        return padding * 1_000_000_000 // 48000 if padding > 0 else None

    def finish_whole(self, data: bytes) -> bytes:
        """Sizes known, and the Duration that a player shows before it plays."""
        body = self._head(self.samples_out * 1000 / self.sample_rate) + webm.clusters(self._blocks, known_size=True)
        return webm.EBML_HEADER + webm.element(webm.SEGMENT, body)
