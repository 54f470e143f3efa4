"""The memory guard (TTS_MAX_RSS_BYTES): over the limit, the heaviest backend finishes its work and is reloaded.

Real Piper (joe) in a real registry; its engine calls are released by the test
(:class:`tests.support.stepped.SteppedPiper`) so the guard trips with work still queued. The limit
is set below what the process already holds, so it trips on the first job's end.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
from prometheus_client import REGISTRY

from tests.support.helpers import eventually
from tests.support.stepped import SteppedPiper, make_job, settings_for
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.lifecycle.memory_guard import read_rss_bytes
from tts_actor.lifecycle.registry import Registry


def _actions(action: str) -> float:
    return REGISTRY.get_sample_value("tts_memory_guard_actions_total", {"backend": "piper", "action": action}) or 0.0


def test_the_resident_size_is_read_from_proc() -> None:
    rss = read_rss_bytes()
    assert rss is not None and 10 * 1024 * 1024 < rss < 64 * 1024**3
    assert read_rss_bytes("/nonexistent/statm") is None


async def test_over_the_limit_the_backend_finishes_its_queue_refuses_new_work_and_is_reloaded(tmp_path: Path) -> None:
    rss = read_rss_bytes()
    assert rss is not None
    settings = settings_for(tmp_path, max_rss_bytes=rss // 2)
    piper = SteppedPiper(settings)
    registry = Registry(settings, None, lambda event: None, adapters={"piper": piper})
    assert REGISTRY.get_sample_value("tts_memory_guard_bytes") == rss // 2
    await registry.start()
    actor = registry.actors["piper"]
    tripped, reloaded = _actions("tripped"), _actions("reloaded")
    try:
        assert (await actor.wait_settled(60)).value == "loaded"
        out: list[str] = []
        first, queued = make_job(actor, "a", ["First job."], out), make_job(actor, "b", ["Queued job."], out)
        with structlog.testing.capture_logs() as logs:
            actor.submit(first)
            actor.submit(queued)
            await piper.wait_entered()
            piper.step()
            await asyncio.wait_for(first.future, 30)
            assert registry.memory_guard.guarded == "piper"  # tripped as the first job ended
            with pytest.raises(TtsError) as refused:
                actor.submit(make_job(actor, "c", ["Too late."], out))
            assert refused.value.code is ErrorCode.BUSY and refused.value.reason == "memory_guard"
            assert refused.value.retry_after_ms and refused.value.detail["limit_bytes"] == rss // 2  # type: ignore[index]
            assert registry.status()["memory_guard"]["guarded"] == "piper"  # type: ignore[index]
            piper.run_freely()
            await asyncio.wait_for(queued.future, 30)  # what it had is finished, not dropped
            await eventually(lambda: registry.memory_guard.reloads == 1, timeout_s=60)
        assert actor.state.value == "loaded" and registry.memory_guard.guarded is None
        assert out == ["a0", "b0"] and "Too late." not in piper.calls
        events = [e for e in logs if e["event"] == "memory_guard"]
        assert [e["action"] for e in events] == ["tripped", "reloaded", "ineffective"], events
        assert events[0]["rss_bytes"] > events[0]["limit_bytes"] and events[0]["queued"] == 1
        assert _actions("tripped") == tripped + 1 and _actions("reloaded") == reloaded + 1
        # the reload did not bring the process under the limit: the guard says so and stays down, serving
        assert not registry.memory_guard.armed
        after = make_job(actor, "d", ["Served again."], out)
        actor.submit(after)
        await asyncio.wait_for(after.future, 30)
        assert registry.memory_guard.reloads == 1
    finally:
        piper.run_freely()
        await registry.stop()
