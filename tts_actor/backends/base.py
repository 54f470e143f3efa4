"""What a backend is: declarations as data, plus load / synthesize / unload.

The registry and the actor derive status, voices, routing and the package probe
from :class:`BackendSpec`; an adapter only adds the three calls that touch the
model. The calls are blocking and run on the backend's own worker thread.
"""

from __future__ import annotations

import abc
import enum
import functools
import importlib.util
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from statemachine import Reason
from tts_actor.audio import spoken

if TYPE_CHECKING:
    from tts_actor.audio.pcm import Audio
    from tts_actor.config import Settings
    from tts_actor.wire.messages import SynthesisRequest


class Device(enum.StrEnum):
    """Where a backend wants to run."""

    CPU = "cpu"
    CUDA_PREFERRED = "cuda-preferred"  # CUDA when present, else CPU
    CUDA_REQUIRED = "cuda-required"


@dataclass(frozen=True)
class Voice:
    id: str
    language: str
    backend: str
    description: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "language": self.language, "backend": self.backend, "description": self.description}


@dataclass(frozen=True)
class ModelRef:
    """One model repository on the hub that a backend needs."""

    repo_id: str
    revision: str | None = None
    allow_patterns: tuple[str, ...] | None = None
    key: str = "default"  # how the adapter finds this model's directory in ``load``


@dataclass(frozen=True)
class License:
    """The licence of a backend's weights. ``needs_acceptance``: the operator must accept it by ``id`` first."""

    id: str  # what TTS_ACCEPT_LICENSES names, e.g. "cpml"
    name: str
    url: str
    needs_acceptance: bool = False


@dataclass(frozen=True)
class BackendSpec:
    """A backend's declarations."""

    name: str
    extra: str
    packages: tuple[str, ...]
    languages: tuple[str, ...]
    sample_rate: int | None
    device: Device
    approx_memory_mb: int
    description: str
    supports_cloning: bool = False
    extra_fix: str = ""
    license: License | None = None
    # the longest text one engine call takes, in ``spoken_unit`` as the adapter's ``spoken_cost`` counts them
    # (by default characters of the spoken form: numbers and symbols written out, foreign scripts weigh more);
    # longer texts are cut into sentences, then at commas, then between words
    max_segment_chars: int = 400
    spoken_unit: str = "chars"  # what spoken_cost counts ("phonemes" for Piper)
    spoken_units_per_s: float = 15.0  # how many of those one second of speech holds: a request's audio estimate
    # engines that fail on tiny inputs: shorter segments are joined to a neighbour, or padded with a pause
    min_segment_chars: int = 0
    # several engine sessions may run at once in one process (TTS_<BACKEND>_WORKERS); else calls are serial
    parallel_sessions: bool = False
    # the engine marks its own output with PerthNet (Chatterbox's generate does): the service adds no second mark
    watermarks_itself: bool = False

    @property
    def install_fix(self) -> str:
        """Commands that exist, for this interpreter: the extra from a checkout, else its pinned requirements.

        Torch-based backends get the CPU torch wheel first: pip's default index pulls CUDA torch
        (a 460 MB venv grew to 6 GB following the bare ``pip install``).
        """
        torch = "torch" in self.packages
        first = f"{pip_install('--index-url', CPU_TORCH_INDEX, 'torch')} && " if torch else ""
        # and the CPU index beside PyPI after it: a package pinning torch==X gets X+cpu, not CUDA's X
        cpu = ("--extra-index-url", CPU_TORCH_INDEX) if torch else ()
        fix = f"{first}{pip_install('-e', f'.[{self.extra}]', *cpu)} (in a tts-actor checkout)"
        requirements = extra_requirements(self.extra)
        if requirements:
            fix += f"; otherwise {first}{pip_install(*requirements, *cpu)}"
        return f"{fix} ({self.extra_fix})" if self.extra_fix else fix


CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def pip_install(*args: str) -> str:
    """``<this interpreter> -m pip install ...``, quoted for a POSIX shell: the venv that runs the service."""
    return " ".join([shlex.quote(sys.executable), "-m", "pip", "install", *(shlex.quote(a) for a in args)])


@functools.cache
def extra_requirements(extra: str) -> tuple[str, ...]:
    """The requirements of tts-actor's ``extra`` from the installed distribution's metadata (wheel or checkout).

    Read once per process: parsing the metadata costs ~5 ms, and every ``tts.status`` names the install fix.
    """
    from importlib import metadata

    try:
        requires = metadata.requires("tts-actor") or []
    except metadata.PackageNotFoundError:
        return ()
    marker = f'extra == "{extra}"'
    return tuple(r.split(";")[0].strip() for r in requires if marker in r.replace("'", '"'))


def license_refusal(spec: BackendSpec, accepted: frozenset[str]) -> BackendFailure | None:
    """A failure when the backend's weights need a licence the operator has not accepted; else None."""
    terms = spec.license
    if terms is None or not terms.needs_acceptance or terms.id in accepted:
        return None
    listed = ",".join(sorted({*accepted, terms.id}))
    return BackendFailure(
        Reason.LICENSE_NOT_ACCEPTED,
        f"{spec.name}: its weights are under the {terms.name} ({terms.url}), which has not been accepted",
        f"Read the licence; if your use complies, set TTS_ACCEPT_LICENSES={listed} and restart, "
        f"or remove {spec.name} from TTS_BACKENDS.",
        {"license": terms.id},
    )


@dataclass
class BackendFailure(Exception):
    """A failure an adapter or the model manager names precisely."""

    reason: Reason
    message: str
    fix: str
    detail: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """Top-level modules that cannot be found, without importing anything heavy."""
    missing = []
    for name in packages:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


def classify_load_error(exc: BaseException, spec: BackendSpec, where: str) -> BackendFailure:
    """Turn an exception from a model library into a named failure with a fix."""
    if isinstance(exc, BackendFailure):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError" or "out of memory" in text.lower():
        return BackendFailure(
            Reason.OUT_OF_MEMORY,
            f"{spec.name}: out of memory while {where} (needs about {spec.approx_memory_mb} MB): {text[:300]}",
            f"Free memory (unload other backends with `tts-actor unload <backend>`), run on a larger GPU, "
            f"or remove {spec.name} from TTS_BACKENDS.",
            {"approx_memory_mb": spec.approx_memory_mb, **memory_figures()},
        )
    if isinstance(exc, ImportError):
        return BackendFailure(
            Reason.PACKAGE_MISSING,
            f"{spec.name}: import failed while {where}: {text[:300]}",
            spec.install_fix,
        )
    return BackendFailure(
        Reason.LOAD_ERROR,
        f"{spec.name}: {name} while {where}: {text[:300]}",
        f"Check the model files (`tts-actor doctor`), then `tts-actor retry {spec.name}`.",
    )


def memory_figures() -> dict[str, object]:
    """GPU memory figures when torch and CUDA are present; empty otherwise."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {"cuda_free_mb": free // 2**20, "cuda_total_mb": total // 2**20}


class BackendAdapter(abc.ABC):
    """One TTS engine behind the lifecycle machine."""

    spec: BackendSpec

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def languages(self) -> tuple[str, ...]:
        return self.spec.languages

    def configured_languages(self) -> tuple[str, ...]:
        """``TTS_<BACKEND>_LANGUAGES`` when set (checked against the spec), else every declared language."""
        wanted = self.settings.language_overrides.get(self.name)
        if not wanted:
            return self.spec.languages
        unknown = [lang for lang in wanted if lang not in self.spec.languages]
        if unknown:
            from tts_actor.config import ConfigError

            raise ConfigError(
                f"TTS_{self.name.upper()}_LANGUAGES names {', '.join(unknown)}, which {self.name} does not speak; "
                f"it speaks: {', '.join(self.spec.languages)}"
            )
        return tuple(dict.fromkeys(wanted))

    @property
    def local_model_dir(self) -> Path | None:
        """``TTS_<BACKEND>_MODEL_DIR``: model files already on disk, so nothing is downloaded."""
        return self.settings.local_model_dirs.get(self.name)

    def model_dir(self, model_dirs: dict[str, Path], key: str = "default") -> Path:
        """The directory of model ``key``: from the download, or ``<local dir>/<key>`` / ``<local dir>``."""
        if key in model_dirs:
            return model_dirs[key]
        local = self.local_model_dir
        if local is not None:
            return local / key if (local / key).is_dir() else local
        raise BackendFailure(
            Reason.MODEL_UNAVAILABLE,
            f"{self.name}: no model files for {key!r}",
            f"Run `tts-actor fetch {self.name}`, or set TTS_{self.name.upper()}_MODEL_DIR to a local copy.",
        )

    @abc.abstractmethod
    def voices(self) -> list[Voice]:
        """Voices on offer, from declarations and files; cheap, no model load."""

    def models(self) -> tuple[ModelRef, ...]:
        """Hub repositories to fetch before ``load``; empty for local-only engines."""
        return ()

    @abc.abstractmethod
    def load(self, model_dirs: dict[str, Path]) -> None:
        """Load the model into memory. Blocking; raises on failure."""

    @abc.abstractmethod
    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        """Speak ``request.text`` with ``voice``. Blocking."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Drop the model and free its memory (GPU included)."""

    def spoken_cost(self, text: str, voice: Voice) -> int:
        """What ``text`` costs this engine, in ``spec.spoken_unit``: segments and admission are measured by it.

        Cheap (no synthesis, may run on the event loop); by default the spoken-form estimate.
        """
        return spoken.spoken_cost(text, voice.language)

    def forget_reference(self, digest: str) -> int:
        """Drop whatever was computed from the reference clip ``digest`` (a deleted voice); how many entries went.

        Thread-safe and cheap (called on the event loop); engines without cloning keep nothing.
        """
        return 0

    def not_loaded(self) -> Exception:
        """What ``synthesize`` raises when a request reaches it after an unload."""
        from tts_actor.errors import ErrorCode, TtsError

        return TtsError(
            ErrorCode.BACKEND_NOT_READY,
            f"{self.name}: the model is not loaded (unloaded while the request waited)",
            f"Retry; `tts-actor retry {self.name}` loads it again.",
            backend=self.name,
            retry_after_ms=1000,
        )

    def default_voice(self, language: str) -> Voice | None:
        for voice in self.voices():
            if voice.language == language:
                return voice
        return None

    def find_voice(self, voice_id: str) -> Voice | None:
        for voice in self.voices():
            if voice.id == voice_id:
                return voice
        return None
