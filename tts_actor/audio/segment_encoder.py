"""The PyAV front shared by every encoder: resampling, and feeding a codec whole frames.

:class:`SegmentEncoder` is the contract (PCM segment in, the next bytes of one file out);
:class:`CodecEncoder` runs a PyAV codec context and holds back a partial frame for the next
segment, so that each output ends on a whole codec frame. The formats themselves, and the
containers around their packets, are :mod:`.codecs` and :mod:`.containers`.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from tts_actor.audio.formats import content_type
from tts_actor.audio.tags import Mark


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

    def __init__(self, fmt: str, in_rate: int, out_rate: int, mark: Mark | None = None) -> None:
        self.format = fmt
        self.in_rate = in_rate
        self.sample_rate = out_rate
        self.mark = mark  # the synthetic-speech comment, where the container has a field for it
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


class CodecEncoder(SegmentEncoder):
    """A PyAV codec context fed whole codec frames; the remainder waits for the next segment."""

    codec_name: str
    sample_format: str

    def __init__(
        self, fmt: str, in_rate: int, out_rate: int, bitrate: int | None = None, mark: Mark | None = None
    ) -> None:
        import av

        super().__init__(fmt, in_rate, out_rate, mark)
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


class OpusCodec(CodecEncoder):
    """libopus tuned for speech (``voip``, 20 ms frames), whatever the container around its packets."""

    codec_name = "libopus"
    sample_format = "s16"
    FRAME_MS = 20

    def __init__(
        self,
        fmt: str,
        in_rate: int,
        out_rate: int,
        bitrate: int | None = None,
        mark: Mark | None = None,
        application: str = "voip",
    ) -> None:
        self.options = {"application": application, "frame_duration": str(self.FRAME_MS)}
        super().__init__(fmt, in_rate, out_rate, bitrate, mark)
        self.opus_head = bytes(self.ctx.extradata)  # RFC 7845's identification header
        self.pre_skip = int.from_bytes(self.opus_head[10:12], "little")  # in 48 kHz samples
        self.scale = 48000 // out_rate  # Opus counts time in 48 kHz samples whatever the input rate

    def _configure(self, ctx: Any) -> None:
        ctx.options = dict(self.options)  # voip: tuned for speech, as the voice-message pipeline had it
