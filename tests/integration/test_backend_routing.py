"""Through NATS: language priority, fallback when a backend is unloaded or runs out of memory, unload frees MMS.

The real service on a real embedded NATS server, with Piper and the tiny MMS model
for real. The one stand-in is ``BigModelStandIn``: an adapter for an engine that
needs more GPU memory than there is, which cannot run out of memory here for real.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest

from statemachine import Reason, State
from tests.support.backends import isolated_settings, next_state, running_service, tone_wav
from tests.support.tiny_vits import TINY_SAMPLING_RATE, make_tiny_vits
from tts_actor.audio.pcm import Audio
from tts_actor.backends import BackendAdapter, BackendSpec, Device, Voice
from tts_actor.backends.chatterbox import ChatterboxBackend
from tts_actor.backends.mms import MmsBackend
from tts_actor.backends.piper import PiperBackend
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.headers import Header
from tts_actor.wire.messages import SynthesisRequest


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return make_tiny_vits(tmp_path_factory.mktemp("mms") / "en")


class OutOfMemoryError(RuntimeError):
    """Named like ``torch.OutOfMemoryError``, which is what CUDA raises."""


class BigModelStandIn(BackendAdapter):
    """Stands in for a GPU engine that runs out of memory while loading or while synthesizing."""

    spec = BackendSpec(
        name="bigmodel",
        extra="bigmodel",
        packages=(),
        languages=("en",),
        sample_rate=24000,
        device=Device.CUDA_REQUIRED,
        approx_memory_mb=24000,
        description="stand-in for a large GPU model",
    )

    def __init__(self, settings: object, oom_during: str) -> None:
        super().__init__(settings)  # type: ignore[arg-type]
        self.oom_during = oom_during
        self.resident = False  # what a real engine would hold in GPU memory
        self.unloads = 0

    def voices(self) -> list[Voice]:
        return [Voice("bigmodel-en", "en", self.name)]

    def load(self, model_dirs: dict[str, Path]) -> None:
        if self.oom_during == "load":
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.resident = True

    def synthesize(self, request: SynthesisRequest, voice: Voice) -> Audio:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def unload(self) -> None:
        self.resident = False
        self.unloads += 1


@pytest.mark.parametrize("oom_during", ["synthesize", "load"])
async def test_out_of_memory_fails_the_backend_and_routing_falls_back(tmp_path: Path, oom_during: str) -> None:
    settings = isolated_settings(
        tmp_path, backends=("bigmodel", "piper"), language_priority={"en": ("bigmodel", "piper")}
    )
    adapters = {"bigmodel": BigModelStandIn(settings, oom_during), "piper": PiperBackend(settings)}
    async with running_service(tmp_path, settings, adapters) as (app, client):
        assert app.registry is not None
        for actor in app.registry.actors.values():
            await actor.wait_settled(30)
        if oom_during == "synthesize":
            assert app.registry.actors["bigmodel"].state is State.LOADED
            with pytest.raises(TtsError) as error:
                await client.synthesize(SynthesisRequest(text="Too big for this GPU."))
            assert error.value.code is ErrorCode.OUT_OF_MEMORY
            assert error.value.backend == "bigmodel"
            assert error.value.detail is not None and error.value.detail["approx_memory_mb"] == 24000
            assert "unload other backends" in error.value.fix

        status = {b["name"]: b for b in (await client.status())["backends"]}
        assert (status["bigmodel"]["state"], status["bigmodel"]["reason"]) == ("failed", "out_of_memory")
        assert "24000 MB" in status["bigmodel"]["message"]

        reply = await client.synthesize(SynthesisRequest(text="The next one speaks."))
        assert reply.backend == "piper"
        assert reply.headers[Header.FALLBACK_FROM.value] == "bigmodel"
        big = adapters["bigmodel"]
        assert isinstance(big, BigModelStandIn)
        if oom_during == "synthesize":
            assert not big.resident and big.unloads >= 1, "the model that ran out of memory is released"
        # the operator can still unload a failed backend (the fix says so): failed → missing
        result = await client.control("bigmodel", "unload")
        assert result["ok"] is True and result["state"] == "missing"


async def test_priority_voices_unload_and_reload_of_mms(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = isolated_settings(
        tmp_path,
        backends=("piper", "mms"),
        language_priority={"en": ("mms", "piper")},
        language_overrides={"mms": ("en",)},
        local_model_dirs={"mms": tiny_model_dir},
        accepted_licenses=frozenset({"cc-by-nc-4.0"}),  # MMS weights are CC BY-NC 4.0
    )
    async with running_service(tmp_path, settings, {"piper": PiperBackend(settings), "mms": MmsBackend(settings)}) as (
        app,
        client,
    ):
        assert app.registry is not None
        mms = app.registry.actors["mms"]
        for actor in app.registry.actors.values():
            assert await actor.wait_settled(30) is State.LOADED, actor.lifecycle.message

        voices = (await client.voices())["backends"]
        assert [v["id"] for v in voices["mms"]["languages"]["en"]] == ["mms-default-en"]
        assert "en_US-joe-medium" in [v["id"] for v in voices["piper"]["languages"]["en"]]

        reply = await client.synthesize(SynthesisRequest(text="mms goes first for english"))
        assert (reply.backend, reply.sample_rate) == ("mms", TINY_SAMPLING_RATE)
        assert Header.FALLBACK_FROM.value not in reply.headers

        model = weakref.ref(mms.adapter._loaded["en"].model)  # type: ignore[attr-defined]
        result = await client.control("mms", "unload")
        assert (result["ok"], result["state"]) == (True, "missing")
        assert model() is None, "the MMS model is still referenced after unload"

        reply = await client.synthesize(SynthesisRequest(text="piper stands in"))
        assert reply.backend == "piper"
        assert reply.headers[Header.FALLBACK_FROM.value] == "mms"

        await client.control("mms", "retry")
        await next_state(app, "mms", State.LOADED, timeout_s=30)
        reply = await client.synthesize(SynthesisRequest(text="mms is back"))
        assert reply.backend == "mms"


async def test_idle_mms_is_unloaded_and_freed(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = isolated_settings(
        tmp_path,
        backends=("mms",),
        idle_unload_s=0.5,
        language_overrides={"mms": ("en",)},
        local_model_dirs={"mms": tiny_model_dir},
        accepted_licenses=frozenset({"cc-by-nc-4.0"}),  # MMS weights are CC BY-NC 4.0
    )
    async with running_service(tmp_path, settings, {"mms": MmsBackend(settings)}) as (app, _client):
        assert app.registry is not None
        mms = app.registry.actors["mms"]
        assert await mms.wait_settled(30) is State.LOADED
        model = weakref.ref(mms.adapter._loaded["en"].model)  # type: ignore[attr-defined]
        event = await next_state(app, "mms", State.MISSING, timeout_s=10)
        assert event.reason is Reason.IDLE_TIMEOUT
        assert model() is None


async def test_reference_audio_only_goes_to_a_backend_that_clones(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path, backends=("piper",))
    async with running_service(tmp_path, settings, {"piper": PiperBackend(settings)}) as (_app, client):
        with pytest.raises(TtsError) as error:
            await client.synthesize(SynthesisRequest(text="Clone this.", reference_audio=tone_wav(2.0)))
        assert error.value.code is ErrorCode.INVALID_REQUEST
        assert "clone" in error.value.message


async def test_bad_reference_audio_is_the_callers_error_even_when_the_cloning_backend_is_failed(tmp_path: Path) -> None:
    """Chatterbox failed here (package not installed): bad audio is still ``invalid_request``, not its failure."""
    settings = isolated_settings(tmp_path, backends=("piper", "chatterbox"))
    adapters = {"piper": PiperBackend(settings), "chatterbox": ChatterboxBackend(settings)}
    async with running_service(tmp_path, settings, adapters) as (app, client):
        assert app.registry is not None
        assert await app.registry.actors["chatterbox"].wait_settled(10) is State.FAILED
        with pytest.raises(TtsError) as error:
            await client.synthesize(SynthesisRequest(text="Clone this.", reference_audio=b"RIFF...."))
        assert error.value.code is ErrorCode.INVALID_REQUEST
        assert "WAV" in error.value.message and "WAV" in error.value.fix
