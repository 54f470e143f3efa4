"""Voice profiles in synthesis: created through one instance, spoken by another, the clip analysed once.

Two TtsApps share one real nats-server (and its object store). Chatterbox and XTTS are the
stand-in packages of tests/support/stand_in_chatterbox.py and tests/support/stand_in_engines.py (their weights
cannot run here); everything else is real: NATS, JetStream, the service, the adapters.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statemachine import State
from tests.support.backends import install_stand_in, isolated_settings, next_state, tone_wav
from tests.support.stand_in_chatterbox import (  # noqa: F401
    BUILTIN_HZ,
    chatterbox_settings,
    checkpoint,
    dominant_hz,
    stand_in_chatterbox,
)
from tests.support.stand_in_engines import stand_in_tts, xtts_checkpoint  # noqa: F401
from tts_actor.app import TtsApp
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.xtts import XttsBackend
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import TtsError
from tts_actor.wire.messages import SynthesisRequest
from tts_actor.wire.request_parsing import parse_synthesis_request

CLIP_HZ = 440.0


def pitch(wav: bytes) -> float:
    from tts_actor.audio.pcm import read_wav

    audio = read_wav(wav)
    return dominant_hz(np.frombuffer(audio.pcm, dtype="<i2"), audio.sample_rate)


@pytest.fixture
def findable_chatterbox(stand_in_chatterbox: None, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The service's package probe (importlib.util.find_spec) finds the stand-ins; torchaudio is one too."""
    if "torchaudio" not in sys.modules:
        install_stand_in(monkeypatch, "torchaudio")
    for name in ("chatterbox", "torchaudio"):
        monkeypatch.setattr(sys.modules[name], "__spec__", importlib.machinery.ModuleSpec(name, None), raising=False)


@pytest.mark.usefixtures("findable_chatterbox")
async def test_a_profile_made_on_one_instance_is_spoken_by_another_and_analysed_once(
    settings: Settings, tmp_path: Path, client: TtsClient, spans: InMemorySpanExporter
) -> None:
    first = TtsApp(chatterbox_settings(settings, tmp_path, "a"))
    second_adapter = ChatterboxBackend(chatterbox_settings(settings, tmp_path, "b"))
    second = TtsApp(chatterbox_settings(settings, tmp_path, "b"), adapters={"chatterbox": second_adapter})
    await first.start()
    try:
        consent = await client.create_consent(tone_wav(1.0), "the speaker", "en")
        created = await client.create_voice(
            tone_wav(3.0, hz=CLIP_HZ), reference_text="A tone.", language="en", consent=consent["id"]
        )
    finally:
        await first.stop()  # only instance B is left to serve the profile
    await second.start()
    try:
        await next_state(second, "chatterbox", State.LOADED)
        spans.clear()
        profile = created["voice_profile"]
        german = await client.synthesize(
            SynthesisRequest(text="Guten Tag, wie geht es?", language="de", voice_profile=profile, cache=False)
        )
        french = await client.synthesize(
            SynthesisRequest(text="Bonjour, comment allez-vous?", language="fr", voice_profile=profile, cache=False)
        )
        plain = await client.synthesize(SynthesisRequest(text="Ohne Profil gesprochen.", language="de", cache=False))
        model = second_adapter._multilingual
        assert model is not None
        assert len(model.prompts) == 1, "the second language analysed the clip again"
        assert pitch(german.audio) == pytest.approx(CLIP_HZ, abs=5)
        assert pitch(french.audio) == pytest.approx(CLIP_HZ, abs=5)
        assert pitch(plain.audio) == pytest.approx(BUILTIN_HZ, abs=5), "the profile's voice reached the next caller"
        # the profile's language (en) differs from the text's: no accent transfer, as for reference_language
        assert [c["cfg_weight"] for c in model.calls] == [0.0, 0.0, 0.0]
        outcomes = [
            s.attributes.get("tts.conditioning_cache")
            for s in spans.get_finished_spans()
            if s.name == "tts.segment" and s.attributes and "tts.conditioning_cache" in s.attributes
        ]
        assert outcomes == ["miss", "hit"]

        with pytest.raises(TtsError) as unknown:
            await client.synthesize(SynthesisRequest(text="Hallo zusammen.", language="de", voice_profile="A" * 32))
        assert unknown.value.code.value == "unknown_voice" and "tts.voices.create" in (unknown.value.fix or "")

        assert second.registry is not None
        assert await second.registry.actors["chatterbox"].unload()
        assert len(second_adapter._profiles) == 0, "conditionals outlived the model"
    finally:
        await second.stop()


def test_voice_profile_with_reference_audio_is_invalid(settings: Settings) -> None:
    import base64
    import json

    body = {"text": "Hi", "voice_profile": "x" * 32, "reference_audio": base64.b64encode(tone_wav(2.0)).decode()}
    with pytest.raises(TtsError) as caught:
        parse_synthesis_request(json.dumps(body).encode(), settings)
    assert caught.value.code.value == "invalid_request" and "voice_profile" in caught.value.message
    parsed = parse_synthesis_request(json.dumps({"text": "Hi", "voice_profile": "p" * 32}).encode(), settings)
    assert parsed.clones and parsed.reference_audio is None
    assert json.loads(parsed.to_json())["voice_profile"] == "p" * 32


@pytest.mark.usefixtures("stand_in_tts")
def test_xtts_computes_a_profiles_latents_once_and_forgets_them_on_unload(tmp_path: Path) -> None:
    backend = XttsBackend(isolated_settings(tmp_path, language_overrides={"xtts": ("en", "de")}))
    backend.load({"default": xtts_checkpoint(tmp_path)})
    model = backend._model
    at_load = len(model.latent_sources)
    clip = tone_wav(4.0)
    for language in ("en", "de"):
        backend.synthesize(
            SynthesisRequest(text="Hello", language=language, reference_audio=clip, reference_digest="d1"),
            backend.default_voice(language),  # type: ignore[arg-type]
        )
    assert len(model.latent_sources) == at_load + 1
    assert model.inferences[-1]["latent"] == model.inferences[-2]["latent"]
    backend.synthesize(SynthesisRequest(text="Hello", reference_audio=clip), backend.default_voice("en"))  # type: ignore[arg-type]
    assert len(model.latent_sources) == at_load + 2, "a clip sent inline is analysed per request, as before"
    backend.unload()
    assert len(backend._profiles) == 0
