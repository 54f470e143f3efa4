"""The inaudible second mark on synthetic speech: PerthNet, the neural watermark Chatterbox applies to its own output.

Metadata saying "AI-generated" is lost on any re-encode; this mark lives in the sound (magnitudes under 2 kHz)
and survives codecs. It is an extra (``[watermark]``: resemble-perth's trained weights, torch on CPU):
``TTS_WATERMARK`` is ``auto`` (on when the extra is installed), ``on`` (required: a synthesis that cannot be
marked is refused with ``watermark_unavailable``) or ``off``. The model is loaded once per process, under a
lock. The sync calls block; the ``*_async`` ones run them off the event loop on a thread of their own (one
for marking, one for detection) whose torch ops use one core: the mark runs beside the next segment's synthesis,
and torch's default (a thread per core) made it 3-8 times slower on a busy 2-core host (OpenMP threads waiting
on each other), where one thread costs about 20 % of Piper's synthesis time (tests/bench_watermark.py).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np

from tts_actor.audio import perthnet
from tts_actor.audio.decode import UndecodableAudio, decode_mono, resample_float
from tts_actor.audio.pcm import Audio
from tts_actor.errors import ErrorCode, TtsError

THRESHOLD = 0.5  # upstream rounds the decoder's score: at or above this, the mark is there
MAX_DETECT_S = 600.0  # the longest audio a detection decodes
NAME = "perth"  # what the cache key and the logs call this mark
FIX = (
    "Install the watermark extra: pip install 'tts-actor[watermark]' "
    "(torch from the CPU index first: pip install --index-url https://download.pytorch.org/whl/cpu torch), "
    "or set TTS_WATERMARK=off to synthesize without the inaudible mark"
)


class WatermarkMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class Detection:
    watermarked: bool
    confidence: float  # the decoder's score, 0 to 1; ``watermarked`` when at least THRESHOLD
    seconds: float  # how much audio was scored

    def to_dict(self) -> dict[str, object]:
        return {"watermarked": self.watermarked, "confidence": round(self.confidence, 4), "seconds": self.seconds}


def unavailable(why: str) -> TtsError:
    return TtsError(ErrorCode.WATERMARK_UNAVAILABLE, f"the inaudible watermark is not available here: {why}", FIX)


def missing_packages(package: str = perthnet.PACKAGE) -> list[str]:
    """What the extra lacks here (distribution names), without importing anything."""
    missing = [] if importlib.util.find_spec("torch") is not None else ["torch"]
    return missing + ([] if perthnet.package_dir(package) is not None else ["resemble-perth"])


def applies(mode: WatermarkMode, package: str = perthnet.PACKAGE) -> bool:
    """Whether syntheses get the mark: ``on`` always (and fails without the extra), ``auto`` when installed."""
    return mode is WatermarkMode.ON or (mode is WatermarkMode.AUTO and not missing_packages(package))


_lock = threading.Lock()
_models: dict[str, perthnet.PerthModel] = {}


def model(package: str = perthnet.PACKAGE) -> perthnet.PerthModel:
    """The PerthNet of this process, loaded at the first call (~0.2 s, 37 MB of weights); ``watermark_unavailable``."""
    with _lock:
        if package in _models:
            return _models[package]
        missing = missing_packages(package)
        root = perthnet.package_dir(package)
        if missing or root is None:
            raise unavailable(f"{', '.join(missing)} not installed")
        try:
            loaded = perthnet.build(root)
        except (ImportError, OSError, KeyError, RuntimeError) as exc:  # a partial install, or another release
            raise unavailable(f"PerthNet did not load from {root}: {type(exc).__name__}: {exc}") from exc
        _models[package] = loaded
        return loaded


def mark(audio: Audio, package: str = perthnet.PACKAGE) -> Audio:
    """``audio`` with the mark, same rate and length. Blocking (~20 % of Piper's synthesis time): see mark_async."""
    net = model(package)
    if not audio.pcm:
        return audio
    samples = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    rate = net.params.sample_rate
    marked = resample_float(net.mark(resample_float(samples, audio.sample_rate, rate)), rate, audio.sample_rate)
    out = np.zeros(len(samples), np.float32)
    out[: min(len(out), len(marked))] = marked[: len(out)]
    return Audio((np.clip(out, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes(), audio.sample_rate)


def detect_samples(samples: np.ndarray, rate: int, package: str = perthnet.PACKAGE) -> Detection:
    """Score float mono samples at ``rate``. Silence scores 0: the decoder only reads voiced frames."""
    net = model(package)
    at_rate = resample_float(samples, rate, net.params.sample_rate)
    confidence = net.score(at_rate) if len(at_rate) > net.params.n_fft // 2 else 0.0
    confidence = 0.0 if confidence != confidence else confidence  # NaN: no voiced frame at all
    return Detection(confidence >= THRESHOLD, confidence, round(len(samples) / rate, 3))


T = TypeVar("T")
HEAD_CONTEXT_S = 0.4  # what a stream's early-marked first piece is marked with beyond it: past the net's reach
CROSSFADE_S = 0.02  # from the early mark into the whole segment's


def spliced(early: bytes, whole: bytes, fade: int) -> bytes:
    """``whole`` (PCM) starting from ``early`` (the same audio marked on less context) and fading into it."""
    out = np.frombuffer(whole, dtype="<i2").astype(np.float32)
    first = np.frombuffer(early, dtype="<i2").astype(np.float32)
    n = min(fade, len(first), len(out))
    weight = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
    out[:n] = first[:n] * (1 - weight) + out[:n] * weight
    return np.clip(out.round(), -32768, 32767).astype("<i2").tobytes()


def _one_torch_thread() -> None:
    """In a new worker thread: torch's intra-op pool of this thread at one thread, the process's default unchanged.

    ``torch.set_num_threads`` sets this thread's OpenMP count and the default new threads start from; a helper
    thread puts that default back, and this thread keeps its one (ATen reads the default once per thread).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(before,), name="torch-threads-restore")
    restore.start()
    restore.join()


class TorchWorker:
    """One thread, created at first use, where blocking torch calls run single-threaded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=self.name, initializer=_one_torch_thread)
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)


MARKING = TorchWorker("tts-watermark")
DETECTION = TorchWorker("tts-detect")  # apart: a 10-minute file being scored never holds up a reply's mark


async def mark_async(audio: Audio, package: str = perthnet.PACKAGE) -> Audio:
    """:func:`mark` on the marking thread."""
    return await MARKING.run(mark, audio, package)


async def detect_file_async(data: bytes, package: str = perthnet.PACKAGE) -> Detection:
    """:func:`detect_file` on the detection thread."""
    return await DETECTION.run(detect_file, data, package)


def detect_file(data: bytes, package: str = perthnet.PACKAGE) -> Detection:
    """Whether a file (any format FFmpeg reads) carries the mark; ``invalid_request`` when it is not audio."""
    net = model(package)  # first: a host without the extra says so whatever the file
    rate = net.params.sample_rate
    try:
        samples = decode_mono(data, rate, MAX_DETECT_S)
    except UndecodableAudio as exc:
        raise TtsError(
            ErrorCode.INVALID_REQUEST,
            f"cannot detect a watermark: {exc}",
            f"Send one audio file (WAV, FLAC, MP3, AAC, Opus, ...) of at most {MAX_DETECT_S:.0f} s.",
        ) from exc
    return detect_samples(samples, rate, package)
