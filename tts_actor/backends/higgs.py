"""Boson AI Higgs Audio v2 (``boson-multimodal``): expressive generation with voice cloning; best on a CUDA GPU.

Three repositories come through the model manager: the 3B generation model, its
audio tokenizer, and ``bosonai/hubert_base``, the semantic model that the audio
tokenizer otherwise fetches from the hub itself (``AutoModel.from_pretrained(...,
trust_remote_code=True)``); during the load that call is pointed at the fetched
copy, offline. A request is a ChatML conversation: a system prompt describing the
scene, then (when cloning) the reference clip's transcript as a user turn and the
clip as an assistant turn, then the text. Upstream clones from the clip's real
transcript (``reference_text``); without one a neutral sentence stands in, and the
cloned voice is weaker (the model may drift from the reference's timbre).
CPU works upstream, slowly; CUDA is used when present.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from tts_actor.audio.pcm import Audio, float_to_pcm16
from tts_actor.backends.base import BackendAdapter, BackendSpec, Device, License, ModelRef, Voice
from tts_actor.backends.reference_audio import reference_wav_file
from tts_actor.backends.torch_support import pick_device, release_memory, seeded, to_numpy
from tts_actor.backends.upstream import Kind, Upstream, swapped_global
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisRequest

DEFAULT_MODEL_REPO = "bosonai/higgs-audio-v2-generation-3B-base"
DEFAULT_TOKENIZER_REPO = "bosonai/higgs-audio-v2-tokenizer"
# the audio tokenizer's semantic model, named inside boson_multimodal (HiggsAudioTokenizer, "hubert_base_general")
SEMANTIC_MODEL_REPO = "bosonai/hubert_base"
AUDIO_TOKENIZER_MODULE = "boson_multimodal.audio_processing.higgs_audio_tokenizer"
SYSTEM_PROMPT = (
    "Generate audio following instruction.\n\n"
    "<|scene_desc_start|>\nAudio is recorded from a quiet room.\n<|scene_desc_end|>"
)
# stands in for the reference clip's transcript when the request carries none (weaker cloning)
REFERENCE_TRANSCRIPT = "Please listen to this voice."
MAX_NEW_TOKENS = 2048
DEFAULT_TEMPERATURE = 0.3

UPSTREAM = (
    Upstream(
        "boson-multimodal",
        "boson_multimodal.serve.serve_engine",
        "HiggsAudioServeEngine",
        kwargs=("model_name_or_path", "audio_tokenizer_name_or_path", "device"),
    ),
    Upstream(
        "boson-multimodal",
        "boson_multimodal.serve.serve_engine",
        "HiggsAudioServeEngine.generate",
        kwargs=("chat_ml_sample", "max_new_tokens", "temperature", "stop_strings", "force_audio_gen", "seed"),
    ),
    Upstream("boson-multimodal", "boson_multimodal.serve.serve_engine", "HiggsAudioResponse.audio", Kind.ATTRIBUTE),
    Upstream(
        "boson-multimodal", "boson_multimodal.serve.serve_engine", "HiggsAudioResponse.sampling_rate", Kind.ATTRIBUTE
    ),
    Upstream("boson-multimodal", "boson_multimodal.data_types", "Message", kwargs=("role", "content")),
    Upstream("boson-multimodal", "boson_multimodal.data_types", "ChatMLSample", kwargs=("messages",)),
    Upstream("boson-multimodal", "boson_multimodal.data_types", "AudioContent", kwargs=("audio_url",)),
    # the hub call for the semantic model that the load points at the fetched copy
    Upstream("boson-multimodal", AUDIO_TOKENIZER_MODULE, "AutoModel", Kind.GLOBAL),
    Upstream("boson-multimodal", AUDIO_TOKENIZER_MODULE, "HiggsAudioTokenizer", kwargs=("semantic_techer",)),
)

SPEC = BackendSpec(
    name="higgs",
    extra="higgs",
    packages=("boson_multimodal", "torch", "torchaudio"),
    languages=("en", "zh", "de", "ko"),  # the model card's list
    sample_rate=24000,
    device=Device.CUDA_PREFERRED,
    approx_memory_mb=24000,
    description="Boson AI Higgs Audio v2: expressive generation with voice cloning (CUDA GPU about 24 GB; CPU slow).",
    supports_cloning=True,
    extra_fix="boson-multimodal pins transformers<4.47: give it its own virtualenv",
    license=License(
        "boson-higgs-audio-2",
        "Boson Higgs Audio 2 Community License",
        "https://huggingface.co/bosonai/higgs-audio-v2-generation-3B-base/blob/main/LICENSE",
        True,
    ),
    # a few sentences per call keep generation well under its token budget
    max_segment_chars=400,
)


class HiggsAudioBackend(BackendAdapter):
    spec = SPEC

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._languages = self.configured_languages() if settings.language_overrides.get("higgs") else ("en", "zh")
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def languages(self) -> tuple[str, ...]:
        return self._languages

    def voices(self) -> list[Voice]:
        return [
            Voice(f"higgs-default-{lang}", lang, self.name, "voice chosen by the model; send reference_audio to clone")
            for lang in self._languages
        ]

    def models(self) -> tuple[ModelRef, ...]:
        if self.local_model_dir is not None:
            return ()
        return (
            ModelRef(self.settings.repo_overrides.get("higgs", DEFAULT_MODEL_REPO), key="model"),
            ModelRef(DEFAULT_TOKENIZER_REPO, key="tokenizer"),
            ModelRef(SEMANTIC_MODEL_REPO, key="semantic"),
        )

    def load(self, model_dirs: dict[str, Path]) -> None:
        device = pick_device(self.spec)
        from boson_multimodal.serve.serve_engine import HiggsAudioServeEngine

        semantic = self.model_dir(model_dirs, "semantic")
        module = sys.modules[AUDIO_TOKENIZER_MODULE]
        with swapped_global(module, "AutoModel", _FetchedOnly(module.AutoModel, {SEMANTIC_MODEL_REPO: semantic})):
            engine = HiggsAudioServeEngine(
                str(self.model_dir(model_dirs, "model")), str(self.model_dir(model_dirs, "tokenizer")), device=device
            )
        with self._lock:
            self._engine = engine

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        from boson_multimodal.data_types import AudioContent, ChatMLSample, Message

        with self._lock:
            engine = self._engine
        if engine is None:
            raise self.not_loaded()
        options = request.options
        with reference_wav_file(request.reference_audio) as reference:
            messages = [Message(role="system", content=SYSTEM_PROMPT)]
            if reference is not None:
                messages += [
                    Message(role="user", content=request.reference_text or REFERENCE_TRANSCRIPT),
                    Message(role="assistant", content=AudioContent(audio_url=str(reference))),
                ]
            messages.append(Message(role="user", content=request.text))
            with seeded(options.seed):
                try:
                    output = engine.generate(
                        chat_ml_sample=ChatMLSample(messages=messages),
                        max_new_tokens=MAX_NEW_TOKENS,
                        temperature=DEFAULT_TEMPERATURE if options.temperature is None else options.temperature,
                        stop_strings=["<|end_of_text|>", "<|eot_id|>"],
                        force_audio_gen=True,
                        seed=options.seed,
                    )
                except IndexError as exc:  # 0.1.1 indexes the audio tokens of a reply that has none
                    raise self._no_audio() from exc
        if output.audio is None or len(output.audio) == 0:
            raise self._no_audio()
        return Audio(float_to_pcm16(to_numpy(output.audio)), int(output.sampling_rate))

    def _no_audio(self) -> TtsError:
        return TtsError(
            ErrorCode.SYNTHESIS_FAILED,
            "higgs: the model answered without audio",
            "Retry (with another seed or a lower temperature), or rephrase the text.",
            backend=self.name,
        )

    def unload(self) -> None:
        with self._lock:
            self._engine = None
        release_memory()


class _FetchedOnly:
    """``AutoModel`` as the audio tokenizer sees it during the load: named repositories from the fetched copies."""

    def __init__(self, auto_model: Any, fetched: dict[str, Path]) -> None:
        self._auto_model = auto_model
        self._fetched = fetched

    def from_pretrained(self, name: str, *args: Any, **kwargs: Any) -> Any:
        local = self._fetched.get(str(name))
        if local is None:
            raise OSError(f"higgs: {name} was not fetched by the model manager; refusing to reach the hub")
        kwargs["local_files_only"] = True
        return self._auto_model.from_pretrained(str(local), *args, **kwargs)
