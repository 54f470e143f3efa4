"""Fleets of in-process instances on one real nats-server, started and settled on events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from statemachine import Reason, State
from tests.support.backends import corrupt_piper
from tts_actor.app import TtsApp
from tts_actor.config import Settings
from tts_actor.fleet.watch import FleetWatch


@contextlib.asynccontextmanager
async def fleet_started(*apps: TtsApp) -> AsyncIterator[None]:
    """Start the apps, wait (on events) for every backend to settle and for each watch to read every instance."""
    try:
        for app in apps:
            await app.start()
        for app in apps:
            assert app.registry is not None and app.publisher is not None
            for actor in app.registry.actors.values():
                await actor.wait_settled(30)
            await app.publisher.flush()
        actual = {
            app.settings.instance: {name: actor.state for name, actor in app.registry.actors.items()}  # type: ignore[union-attr]
            for app in apps
        }

        def seen_as_is(watch: FleetWatch) -> bool:
            fleet = watch.fleet()
            return {i: {b: e.to_state for b, e in fleet.get(i, {}).items()} for i in actual} == actual

        for app in apps:  # tts.status and routing read each instance's live copy: every one has read every state
            watch = app.service.routing.fleet  # type: ignore[union-attr]
            assert await watch.wait_until(lambda watch=watch: seen_as_is(watch), 10), watch.entries
        yield
    finally:
        for app in apps:
            await app.stop()


@contextlib.asynccontextmanager
async def piper_loaded_on_a_only(base: Settings, tmp_path: Path) -> AsyncIterator[tuple[TtsApp, TtsApp]]:
    """Instance ``a`` with Piper loaded; ``b`` whose Piper failed (a corrupt model), both seen by both."""
    a = TtsApp(base.with_(instance="a", cache_dir=tmp_path / "a"))
    b_settings = base.with_(instance="b", cache_dir=tmp_path / "b")
    b = TtsApp(b_settings, adapters={"piper": corrupt_piper(b_settings, tmp_path / "bad-voice")})
    async with fleet_started(a, b):
        assert a.registry is not None and b.registry is not None
        assert a.registry.actors["piper"].state is State.LOADED
        assert b.registry.actors["piper"].state is State.FAILED
        assert b.registry.actors["piper"].lifecycle.reason is Reason.CORRUPT_MODEL
        yield a, b
