"""Fleet-aware routing on one real nats-server: decided once per request, by parsed instance identity.

Everything runs for real: Piper synthesizes, MMS really fails (no model and downloads off: ``offline``),
the state KV and the per-backend subjects are the server's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from statemachine import Reason, State
from tests.support.audio_checks import decode
from tests.support.fleet import fleet_started
from tts_actor.app import TtsApp
from tts_actor.backends.base import BackendFailure
from tts_actor.client.tts_client import TtsClient
from tts_actor.config import Settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.fleet.routing import Forward
from tts_actor.fleet.state_kv import instance_key
from tts_actor.wire.messages import SynthesisRequest


def count_routes(app: TtsApp, monkeypatch: pytest.MonkeyPatch) -> list[SynthesisRequest]:
    """Every ``Registry.route`` call of ``app``'s registry, from now on (the real method still answers)."""
    registry = app.registry
    assert registry is not None
    calls: list[SynthesisRequest] = []
    original = registry.route

    def route(request: SynthesisRequest, *args: Any, **kwargs: Any) -> Any:
        calls.append(request)
        return original(request, *args, **kwargs)

    monkeypatch.setattr(registry, "route", route)
    return calls


async def test_a_mixed_fleet_answers_unpinned_requests_with_the_backend_loaded_anywhere(
    settings: Settings, tmp_path: Path, client: TtsClient
) -> None:
    """Issue 15: ``a`` has Piper loaded, ``tts:b`` only MMS (failed). No request gets b's MMS failure."""
    settings = settings.with_(backend_queue_depth=32, max_inflight=64)  # 20 at once on a's one Piper
    a = TtsApp(settings.with_(instance="a", backends=("piper",), cache_dir=tmp_path / "a"))
    b = TtsApp(
        settings.with_(
            instance="tts:b", backends=("mms",), language_overrides={"mms": ("en",)}, cache_dir=tmp_path / "b"
        )
    )
    async with fleet_started(a, b):
        assert b.registry is not None and b.registry.actors["mms"].state is State.FAILED
        routing = b.service.routing  # type: ignore[union-attr]
        assert routing.fleet.loaded_elsewhere_for("en") == {"piper"}  # a's loaded event says what it speaks
        requests = [SynthesisRequest(text=f"Unpinned request {n} finds the loaded backend.") for n in range(20)]
        replies = await asyncio.gather(*(client.synthesize(r) for r in requests), return_exceptions=True)
        assert [r for r in replies if isinstance(r, BaseException)] == []
        for reply in replies:
            assert reply.backend == "piper"  # type: ignore[union-attr]
            assert decode(reply.audio).duration_ms > 800  # type: ignore[union-attr]
        assert routing.forwarded > 0  # b's share went to a
        # a request naming MMS still gets MMS's own failure: only unpinned ones go elsewhere
        with pytest.raises(TtsError) as caught:
            await client.synthesize(SynthesisRequest(text="Pinned.", backend="mms"), timeout_s=10)
        assert caught.value.code in (ErrorCode.BACKEND_FAILED, ErrorCode.UNKNOWN_BACKEND)


async def test_an_instance_with_an_unsafe_name_knows_its_own_entries(settings: Settings, client: TtsClient) -> None:
    """``eu west`` and ``tts:1`` used to read their own entries (keyed ``eu_west``) as another instance's."""
    apps = [TtsApp(settings.with_(instance=name, backends=("piper",))) for name in ("eu west", "tts:1")]
    async with fleet_started(*apps):
        for app in apps:
            watch = app.service.routing.fleet  # type: ignore[union-attr]
            others = {instance for _, instance in watch.events}
            assert others == {"eu west", "tts:1"} - {app.settings.instance}
            key = next(k for k in watch.entries if k.instance == app.settings.instance)
            assert str(key) == instance_key("piper", app.settings.instance)
        status = await client.status()
        assert [i["instance"] for i in status["fleet"]["instances"]] == ["eu west", "tts:1"]
        assert status["fleet"]["backends"]["piper"]["loaded"] == ["eu west", "tts:1"]


async def test_the_route_is_decided_once_per_request(
    settings: Settings, nc: Client, client: TtsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = TtsApp(settings.with_(instance="solo", backends=("piper",)))
    async with fleet_started(app):
        calls = count_routes(app, monkeypatch)
        for request in (SynthesisRequest(text="Served here."), SynthesisRequest(text="Pinned here.", backend="piper")):
            reply = await client.synthesize(request)
            assert reply.backend == "piper" and len(calls) == 1, calls
            calls.clear()

        actor = app.registry.actors["piper"]  # type: ignore[union-attr]
        actor.fail(BackendFailure(Reason.OUT_OF_MEMORY, "piper: out of memory", "Free memory, then retry."))
        await app.publisher.flush()  # type: ignore[union-attr]
        pinned = SynthesisRequest(text="Nobody has it.", backend="piper")
        decision = app.service.routing.decide(pinned, None)  # type: ignore[union-attr]
        assert isinstance(decision, Forward) and decision.actor is actor  # the local choice travels with it
        calls.clear()
        forwarded_before = app.service.routing.forwarded  # type: ignore[union-attr]
        with pytest.raises(TtsError) as caught:  # the hop finds no responders: answered with the local route
            await client.synthesize(pinned, timeout_s=10)
        assert caught.value.code is ErrorCode.BACKEND_FAILED and "fleet" in (caught.value.detail or {})
        assert len(calls) == 1, calls
        assert app.service.routing.forwarded == forwarded_before  # type: ignore[union-attr]  # nothing relayed


async def test_a_forward_carries_the_local_route_for_a_backend_loaded_elsewhere(
    settings: Settings, tmp_path: Path, client: TtsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``b`` runs Piper and Chatterbox (failed here); ``a`` has Piper loaded; b's Piper is unloaded on purpose."""
    a = TtsApp(settings.with_(instance="a", backends=("piper",), cache_dir=tmp_path / "a"))
    b = TtsApp(settings.with_(instance="b", backends=("chatterbox", "piper"), cache_dir=tmp_path / "b"))
    async with fleet_started(a, b):
        assert b.registry is not None
        assert await b.registry.actors["piper"].unload()
        calls = count_routes(b, monkeypatch)
        decision = b.service.routing.decide(SynthesisRequest(text="Where?"), None)  # type: ignore[union-attr]
        assert isinstance(decision, Forward) and decision.backend == "piper"
        assert decision.local is not None and decision.local.actor is b.registry.actors["piper"]
        assert decision.fallback_from == "chatterbox"
        assert len(calls) == 1
