"""Shutdown is bounded: a load that hangs for good neither keeps the backend pending nor the process alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, threading, time
    from pathlib import Path
    from statemachine import State
    from tts_actor.lifecycle.actor import BackendActor
    from tts_actor.backends.piper import PiperBackend
    from tts_actor.config import Settings, load_settings

    class HangingLoad(PiperBackend):
        '''The real Piper adapter whose load never returns, like an engine stuck in native code.'''

        def load(self, model_dirs):
            threading.Event().wait()

    async def main():
        settings = load_settings({}).with_(
            cache_dir=Path(CACHE), startup_timeout_s=0.5, shutdown_grace_s=0.5, retry_max_attempts=0
        )
        actor = BackendActor(HangingLoad(settings), settings, None, lambda event: None)
        await actor.start()
        state = await actor.wait_settled(10)
        print("state", state.value, actor.lifecycle.reason.value, flush=True)
        await actor.stop()
        print("stopped", flush=True)

    asyncio.run(main())
    """
)


def test_a_hung_load_fails_in_time_and_does_not_hold_the_exit(tmp_path: Path) -> None:
    script = SCRIPT.replace("CACHE", repr(str(tmp_path)))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "state failed load_error" in result.stdout
    assert "stopped" in result.stdout
    assert "engine_call_abandoned" in result.stdout + result.stderr
    assert elapsed < 30, f"exit took {elapsed:.1f} s"


async def test_backends_stop_together_within_one_grace_period(tmp_path: Path) -> None:
    import asyncio
    import threading

    from tts_actor.backends.piper import PiperBackend
    from tts_actor.config import Settings, load_settings
    from tts_actor.lifecycle.registry import Registry

    release = threading.Event()
    names = ("one", "two", "three")
    loading = {n: threading.Event() for n in names}

    class StuckLoad(PiperBackend):
        """The real Piper adapter whose load says it began, then blocks until the test lets it go."""

        def __init__(self, settings: Settings, name: str) -> None:
            super().__init__(settings)
            self.began = loading[name]

        def load(self, model_dirs: dict) -> None:
            self.began.set()
            release.wait(30)

    settings = load_settings({}).with_(cache_dir=tmp_path, backends=names, shutdown_grace_s=0.5)
    registry = Registry(settings, None, lambda event: None, adapters={n: StuckLoad(settings, n) for n in names})
    await registry.start()
    try:
        for began in loading.values():  # every load is under way on its worker
            assert await asyncio.to_thread(began.wait, 10)
        started = time.perf_counter()
        await registry.stop()
        elapsed = time.perf_counter() - started
    finally:
        release.set()
    assert elapsed < 1.4, f"{elapsed:.2f} s: the actors' grace periods ran one after another"
