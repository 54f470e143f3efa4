"""MMS for real: a tiny random VITS model built with transformers, loaded and spoken by the adapter."""

from __future__ import annotations

import time
import weakref
from pathlib import Path

import pytest

from tests.support.backends import isolated_settings
from tts_actor.backends.base import BackendFailure, ModelRef
from tts_actor.backends.mms import MmsBackend
from tts_actor.config import ConfigError, load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.messages import SynthesisOptions, SynthesisRequest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.support.tiny_vits import TINY_SAMPLING_RATE, make_tiny_vits  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.perf_counter()
    path = make_tiny_vits(tmp_path_factory.mktemp("mms") / "en")
    assert time.perf_counter() - started < 30
    return path


def mms_on(tmp_path: Path, model_dir: Path, languages: tuple[str, ...] = ("en",)) -> MmsBackend:
    settings = isolated_settings(tmp_path, language_overrides={"mms": languages}, local_model_dirs={"mms": model_dir})
    return MmsBackend(settings)


def speak(backend: MmsBackend, text: str, **options: object) -> bytes:
    voice = backend.default_voice("en")
    assert voice is not None
    audio = backend.synthesize(SynthesisRequest(text=text, options=SynthesisOptions(**options)), voice)  # type: ignore[arg-type]
    assert audio.sample_rate == TINY_SAMPLING_RATE
    return audio.pcm


def test_one_repository_per_configured_language() -> None:
    backend = MmsBackend(load_settings({"TTS_MMS_LANGUAGES": "en,de,fr"}))
    assert backend.languages == ("en", "de", "fr")
    assert backend.models() == (
        ModelRef("facebook/mms-tts-eng", key="en"),
        ModelRef("facebook/mms-tts-deu", key="de"),
        ModelRef("facebook/mms-tts-fra", key="fr"),
    )
    assert [v.language for v in backend.voices()] == ["en", "de", "fr"]


def test_repository_template_and_default_languages() -> None:
    backend = MmsBackend(load_settings({"TTS_MMS_REPO": "mirror/mms-{iso3}"}))
    assert backend.languages == ("en", "de", "fr", "es")
    assert [r.repo_id for r in backend.models()] == [
        "mirror/mms-eng",
        "mirror/mms-deu",
        "mirror/mms-fra",
        "mirror/mms-spa",
    ]


def test_unknown_language_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TTS_MMS_LANGUAGES names xx"):
        MmsBackend(load_settings({"TTS_MMS_LANGUAGES": "en,xx"}))


def test_a_local_model_dir_needs_no_download(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert mms_on(tmp_path, tiny_model_dir).models() == ()
    from_env = MmsBackend(load_settings({"TTS_MMS_MODEL_DIR": str(tiny_model_dir), "TTS_MMS_LANGUAGES": "en"}))
    assert from_env.local_model_dir == tiny_model_dir
    assert from_env.models() == ()
    from_env.load({})
    assert len(speak(from_env, "from the environment")) > 0


def test_speaks_at_the_model_rate_and_longer_text_gives_more_samples(tmp_path: Path, tiny_model_dir: Path) -> None:
    backend = mms_on(tmp_path, tiny_model_dir)
    backend.load({})
    short = speak(backend, "hi", seed=1)
    long = speak(backend, "hello there, this sentence is a good deal longer than the first one", seed=1)
    assert len(short) > 0
    assert len(long) > 4 * len(short)


def test_the_seed_makes_it_repeatable(tmp_path: Path, tiny_model_dir: Path) -> None:
    backend = mms_on(tmp_path, tiny_model_dir)
    backend.load({})
    assert speak(backend, "same words", seed=7) == speak(backend, "same words", seed=7)
    assert speak(backend, "same words", seed=7) != speak(backend, "same words", seed=8)


def test_a_faster_speed_gives_fewer_samples(tmp_path: Path, tiny_model_dir: Path) -> None:
    backend = mms_on(tmp_path, tiny_model_dir)
    backend.load({})
    text = "hello there, a sentence of some length for the speed test"
    assert len(speak(backend, text, seed=3, speed=2.0)) < len(speak(backend, text, seed=3, speed=1.0))


def test_unload_drops_the_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    backend = mms_on(tmp_path, tiny_model_dir)
    backend.load({})
    model = weakref.ref(backend._loaded["en"].model)
    assert model() is not None
    backend.unload()
    assert model() is None, "the VITS model is still referenced after unload"
    with pytest.raises(TtsError) as error:
        speak(backend, "too late")
    assert error.value.code is ErrorCode.BACKEND_NOT_READY
    backend.load({})
    assert len(speak(backend, "back again", seed=1)) > 0


def test_a_broken_model_dir_is_corrupt_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    backend = mms_on(tmp_path, empty)
    with pytest.raises(BackendFailure) as failure:
        backend.load({})
    assert failure.value.reason.value == "corrupt_model"
    assert "TTS_MMS_MODEL_DIR" in failure.value.fix


def test_only_languages_on_meta_s_mms_tts_list_are_offered() -> None:
    from tts_actor.backends.mms import ISO639_3

    # no facebook/mms-tts-<code> checkpoint exists for these (Meta's MMS-TTS list)
    for lang in "af be cs da et ga gl hy it ja ka lt mk ne no sk sl sr zu".split():
        assert lang not in ISO639_3, lang
    assert ISO639_3["uz"] == "uzb-script_cyrillic"  # the only Uzbek checkpoint
    assert (
        MmsBackend(load_settings({"TTS_MMS_LANGUAGES": "uz"})).repo_for("uz") == "facebook/mms-tts-uzb-script_cyrillic"
    )


def test_a_checkpoint_trained_on_romanized_text_gets_romanized_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The tiny model knows Latin letters only; with is_uroman, Cyrillic text is romanized (uroman) and spoken."""
    import json
    import shutil

    pytest.importorskip("uroman")
    romanized = tmp_path / "ru"
    shutil.copytree(tiny_model_dir, romanized)
    config_file = romanized / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "is_uroman": True}))
    backend = MmsBackend(
        isolated_settings(tmp_path, language_overrides={"mms": ("ru",)}, local_model_dirs={"mms": romanized})
    )
    backend.load({})
    assert backend._loaded["ru"].romanizer is not None
    voice = backend.default_voice("ru")
    assert voice is not None
    audio = backend.synthesize(SynthesisRequest(text="привет мир", language="ru"), voice)
    assert audio.duration_s > 0

    plain = MmsBackend(
        isolated_settings(tmp_path, language_overrides={"mms": ("ru",)}, local_model_dirs={"mms": tiny_model_dir})
    )
    plain.load({})
    assert plain._loaded["ru"].romanizer is None
    with pytest.raises(TtsError) as error:  # the same text, unromanized, holds nothing the model knows
        plain.synthesize(SynthesisRequest(text="привет мир", language="ru"), voice)
    assert error.value.code is ErrorCode.INVALID_REQUEST
