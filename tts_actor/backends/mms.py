"""Meta MMS-TTS: one small VITS model per language (``facebook/mms-tts-<iso639-3>``), via transformers.

Languages are ISO 639-1 codes on the wire; the table below maps them to the
ISO 639-3 codes in the repository names. ``TTS_MMS_LANGUAGES=en,de`` picks which
ones are fetched and loaded; ``TTS_MMS_REPO`` may be a template such as
``myorg/mms-tts-{iso3}``; ``TTS_MMS_MODEL_DIR`` points at local copies
(``<dir>/<lang>/`` or, for one language, ``<dir>`` itself).

Only languages with a checkpoint on Meta's MMS-TTS list are offered (af, be, cs,
da, et, ga, gl, hy, it, ja, ka, lt, mk, ne, no, sk, sl, sr and zu have none);
Uzbek exists only in Cyrillic script. Where a checkpoint was trained on romanized
text (its tokenizer's ``is_uroman``), the text goes through ``uroman`` first.
The weights are CC BY-NC 4.0: the backend loads once the operator accepts it
(``TTS_ACCEPT_LICENSES=cc-by-nc-4.0``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statemachine import Reason
from tts_actor.audio.pcm import Audio, float_to_pcm16
from tts_actor.backends.base import BackendAdapter, BackendFailure, BackendSpec, Device, License, ModelRef, Voice
from tts_actor.backends.torch_support import pick_device, release_memory, seeded, to_numpy
from tts_actor.backends.upstream import Kind, Upstream
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest

DEFAULT_REPO_TEMPLATE = "facebook/mms-tts-{iso3}"
DEFAULT_LANGUAGES = ("en", "de", "fr", "es")

# ISO 639-1 -> the ISO 639-3 code of the matching facebook/mms-tts-* repository, each checked against
# Meta's MMS-TTS language list (https://dl.fbaipublicfiles.com/mms/tts/all-tts-languages.html)
ISO639_3: dict[str, str] = {
    "am": "amh", "ar": "ara", "az": "azj-script_latin", "bg": "bul", "bn": "ben", "ca": "cat", "cy": "cym",
    "de": "deu", "el": "ell", "en": "eng", "es": "spa", "eu": "eus", "fa": "fas", "fi": "fin", "fr": "fra",
    "gu": "guj", "ha": "hau", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind", "is": "isl", "kk": "kaz",
    "km": "khm", "kn": "kan", "ko": "kor", "ky": "kir", "lo": "lao", "lv": "lav", "ml": "mal", "mn": "mon",
    "mr": "mar", "ms": "zlm", "my": "mya", "nl": "nld", "pa": "pan", "pl": "pol", "pt": "por", "ro": "ron",
    "ru": "rus", "so": "som", "sq": "sqi", "sv": "swe", "sw": "swh", "ta": "tam", "te": "tel", "tg": "tgk",
    "th": "tha", "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd-script_arabic", "uz": "uzb-script_cyrillic",
    "vi": "vie", "yo": "yor",
}  # fmt: skip
# what a voice's description adds where the checkpoint expects a script the language is not always written in
SCRIPT_NOTES = {"uz": "Cyrillic script only"}

UPSTREAM = (
    Upstream("transformers", "transformers.models.vits.modeling_vits", "VitsModel", Kind.CLASS),
    Upstream("transformers", "transformers.models.vits.modeling_vits", "VitsModel.speaking_rate", Kind.ATTRIBUTE),
    Upstream("transformers", "transformers.models.vits.tokenization_vits", "VitsTokenizer.is_uroman", Kind.ATTRIBUTE),
    Upstream("uroman", "uroman.uroman", "Uroman", Kind.CLASS),
    Upstream("uroman", "uroman.uroman", "Uroman.romanize_string", kwargs=("s", "lcode")),
)

SPEC = BackendSpec(
    name="mms",
    extra="mms",
    packages=("torch", "transformers"),
    languages=tuple(ISO639_3),
    sample_rate=16000,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=150,  # per language
    description="Meta MMS-TTS (VITS) per language, via transformers.",
    supports_cloning=False,
    license=License(
        "cc-by-nc-4.0", "CC BY-NC 4.0 (non-commercial)", "https://creativecommons.org/licenses/by-nc/4.0/", True
    ),
    # VITS like Piper: the same memory growth with input length
    max_segment_chars=400,
)


@dataclass
class _LoadedLanguage:
    model: Any  # transformers.VitsModel
    tokenizer: Any  # transformers.VitsTokenizer
    device: str
    romanizer: Any = None  # uroman.Uroman where the tokenizer wants romanized text


class MmsBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages() if settings.language_overrides.get("mms") else DEFAULT_LANGUAGES
        self._loaded: dict[str, _LoadedLanguage] = {}
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    def voices(self) -> list[Voice]:
        return [
            Voice(
                f"mms-default-{lang}",
                lang,
                self.name,
                f"MMS-TTS {ISO639_3[lang]}, one speaker" + (f"; {SCRIPT_NOTES[lang]}" if lang in SCRIPT_NOTES else ""),
            )
            for lang in self._languages
        ]

    def repo_for(self, language: str) -> str:
        template = self.settings.repo_overrides.get("mms", DEFAULT_REPO_TEMPLATE)
        return template.format(iso3=ISO639_3[language], lang=language)

    def models(self) -> tuple[ModelRef, ...]:
        if self.local_model_dir is not None:
            return ()
        return tuple(ModelRef(self.repo_for(lang), key=lang) for lang in self._languages)

    def load(self, model_dirs: dict[str, Path]) -> None:
        from transformers import AutoTokenizer, VitsModel

        device = pick_device(self.spec)
        loaded: dict[str, _LoadedLanguage] = {}
        for lang in self._languages:
            directory = self.model_dir(model_dirs, lang)
            try:
                tokenizer = AutoTokenizer.from_pretrained(directory)
                model = VitsModel.from_pretrained(directory).to(device).eval()
            except (OSError, ValueError, KeyError) as exc:
                raise BackendFailure(
                    Reason.CORRUPT_MODEL,
                    f"mms: the {lang} model in {directory} does not load: {type(exc).__name__}: {exc}"[:500],
                    f"Fetch it again (`tts-actor fetch mms`) or fix TTS_MMS_MODEL_DIR / TTS_MMS_REPO "
                    f"({self.repo_for(lang)}), then `tts-actor retry mms`.",
                ) from exc
            romanizer = _romanizer() if getattr(tokenizer, "is_uroman", False) else None
            loaded[lang] = _LoadedLanguage(model, tokenizer, device, romanizer)
        with self._lock:
            self._loaded = loaded

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        import torch

        with self._lock:
            entry = self._loaded.get(voice.language)
        if entry is None:
            raise self.not_loaded()
        text = request.text
        if entry.romanizer is not None:
            text = entry.romanizer.romanize_string(text, lcode=ISO639_3[voice.language].split("-")[0])
        inputs = entry.tokenizer(text, return_tensors="pt")
        if inputs["input_ids"].shape[-1] == 0:
            raise TtsError(
                ErrorCode.INVALID_REQUEST,
                f"mms: nothing in the text can be spoken by the {voice.language} model (no known characters)",
                "Send text in the language's usual script"
                + (f" ({SCRIPT_NOTES[voice.language]})." if voice.language in SCRIPT_NOTES else "."),
                backend=self.name,
            )
        model = entry.model
        model.speaking_rate = request.options.speed or 1.0
        with torch.inference_mode(), seeded(request.options.seed):
            waveform = model(**inputs.to(entry.device)).waveform
        return Audio(float_to_pcm16(to_numpy(waveform)), int(model.config.sampling_rate))

    def unload(self) -> None:
        with self._lock:
            self._loaded = {}
        release_memory()


_UROMAN: Any = None


def _romanizer() -> Any:
    """One shared ``uroman.Uroman`` (building it reads its tables, about a second); a fix when uroman is missing."""
    global _UROMAN
    if _UROMAN is None:
        try:
            import uroman
        except ImportError as exc:
            raise BackendFailure(
                Reason.PACKAGE_MISSING,
                "mms: a configured language's model reads romanized text and the uroman package is not installed",
                SPEC.install_fix,
            ) from exc
        _UROMAN = uroman.Uroman()
    return _UROMAN
