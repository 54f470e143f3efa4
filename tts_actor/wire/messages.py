"""Wire messages: the synthesis request and the replies, as data classes.

Parsing is strict and total: any input either becomes a valid request or a
:class:`TtsError` with a code, so a bad message can never reach a backend.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tts_actor.audio import formats
from tts_actor.audio.waveform import DEFAULT_POINTS

LANGUAGE_RE = re.compile(r"^[a-z]{2}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
MAX_REFERENCE_AUDIO_BYTES = 2 * 1024 * 1024  # raw bytes after base64 decoding
MAX_REFERENCE_TEXT_CHARS = 1000  # the transcript of at most 30 s of speech
# C0/C1 controls other than tab, newline and carriage return, and lone surrogates: no engine speaks them
UNSPEAKABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class AudioFormat(enum.StrEnum):
    """Reply formats; what each takes (rates, bitrate) is in :data:`tts_actor.audio.formats.FORMATS`."""

    WAV = "wav"
    PCM = "pcm"  # 16-bit little-endian mono; the rate is in the Content-Type
    OPUS = "opus"  # Ogg Opus
    MP3 = "mp3"
    AAC = "aac"  # ADTS
    FLAC = "flac"
    M4A = "m4a"  # AAC-LC in MP4; a stream is fragmented MP4
    WEBM = "webm"  # Opus in WebM

    @property
    def content_type(self) -> str:
        return formats.FORMATS[self.value].content_type

    @classmethod
    def from_extension(cls, path: str) -> AudioFormat | None:
        """``reply.opus`` -> opus; None for an extension that names no format."""
        suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        aliases = {"ogg": cls.OPUS, "oga": cls.OPUS, "raw": cls.PCM, "mp4": cls.M4A, "weba": cls.WEBM}
        return aliases.get(suffix) or (cls(suffix) if suffix in cls._value2member_map_ else None)


class Timings(enum.StrEnum):
    """How fine the reply's timings are: each segment (always), or each word as well (where the engine knows)."""

    SEGMENT = "segment"
    WORD = "word"


class Priority(enum.StrEnum):
    """Which waiting work the backend serves first, segment by segment (ageing keeps bulk moving)."""

    INTERACTIVE = "interactive"  # a person waits for it (a voice message)
    NORMAL = "normal"
    BULK = "bulk"  # nobody waits now (pre-generating a history): yields to the others between its segments

    @property
    def rank(self) -> int:
        """0 is served first."""
        return PRIORITY_ORDER.index(self)


PRIORITY_ORDER = (Priority.INTERACTIVE, Priority.NORMAL, Priority.BULK)


@dataclass(frozen=True)
class SynthesisOptions:
    """Backend-specific knobs; each backend reads the ones it understands."""

    speed: float | None = None
    exaggeration: float | None = None
    cfg_weight: float | None = None
    temperature: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SynthesisRequest:
    """A validated ``tts.synthesize`` request."""

    text: str
    language: str = "en"
    voice: str | None = None
    backend: str | None = None
    format: AudioFormat = AudioFormat.WAV
    wait_ms: int = 0
    options: SynthesisOptions = field(default_factory=SynthesisOptions)
    reference_audio: bytes | None = None
    reference_text: str | None = None  # what is said in reference_audio; engines that clone from a transcript use it
    reference_language: str | None = None  # the language spoken in reference_audio (ISO 639-1), when known
    sample_rate: int | None = None  # resampled to this; the engine's (or the format's) own rate when None
    bitrate: int | None = None  # bit/s, lossy formats only
    stream: bool = False  # one message per segment as it is encoded, then an empty end message
    deadline_ms: int | None = None  # the caller's remaining budget from receipt: work stops at the next segment
    voice_profile: str | None = None  # an id from tts.voices.create: its clip is the reference (the service loads it)
    cache: bool = True  # False: neither read nor write the fleet's audio cache
    allow_script_mismatch: bool = False  # True: speak text in a script the language does not use (spelled out)
    timings: Timings = Timings.SEGMENT  # word: each segment's words and their times as well (a JSON part)
    waveform_points: int = DEFAULT_POINTS  # bytes of Tts-Waveform: peaks of equal slices of the audio
    priority: Priority = Priority.NORMAL  # interactive work goes before bulk between segments
    reference_digest: str | None = None  # internal, never on the wire: the loaded profile's digest (cache keys)

    @property
    def clones(self) -> bool:
        """A reference voice was asked for, as a clip or as a stored profile."""
        return self.reference_audio is not None or self.voice_profile is not None

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"text": self.text, "language": self.language, "format": self.format.value}
        for key in ("voice", "backend"):
            if getattr(self, key):
                body[key] = getattr(self, key)
        if self.wait_ms:
            body["wait_ms"] = self.wait_ms
        options = {k: v for k, v in self.options.__dict__.items() if v is not None}
        if options:
            body["options"] = options
        if self.voice_profile is not None:
            body["voice_profile"] = self.voice_profile
        elif self.reference_audio is not None:
            body["reference_audio"] = base64.b64encode(self.reference_audio).decode()
        for key in ("reference_text", "reference_language"):
            if getattr(self, key) is not None and self.voice_profile is None:
                body[key] = getattr(self, key)
        for key in ("sample_rate", "bitrate", "deadline_ms"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.stream:
            body["stream"] = True
        if not self.cache:
            body["cache"] = False
        if self.allow_script_mismatch:
            body["allow_script_mismatch"] = True
        if self.timings is not Timings.SEGMENT:
            body["timings"] = self.timings.value
        if self.waveform_points != DEFAULT_POINTS:
            body["waveform_points"] = self.waveform_points
        if self.priority is not Priority.NORMAL:
            body["priority"] = self.priority.value
        return json.dumps(body).encode()
