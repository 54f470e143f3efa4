"""The bounded LRU that keeps computed voice conditioning per profile."""

from __future__ import annotations

import threading

import pytest

from tts_actor.backends import conditioning_cache
from tts_actor.backends.conditioning_cache import ConditioningCache


def test_least_recently_used_goes_first() -> None:
    cache: ConditioningCache[str] = ConditioningCache(max_entries=2)
    cache.put("a", "A")
    cache.put("b", "B")
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C")
    assert "b" not in cache and "a" in cache and "c" in cache
    assert len(cache) == 2


def test_second_use_reuses_the_computed_value() -> None:
    cache: ConditioningCache[list[float]] = ConditioningCache(max_entries=4)
    calls: list[str] = []

    def analyse() -> list[float]:
        calls.append("analysed")
        return [0.1, 0.2]

    first, hit_first = cache.get_or_compute(("chatterbox", "digest-1"), analyse)
    second, hit_second = cache.get_or_compute(("chatterbox", "digest-1"), analyse)
    assert (hit_first, hit_second) == (False, True)
    assert second is first and calls == ["analysed"]
    assert (cache.hits, cache.misses) == (1, 1)
    _, hit_other = cache.get_or_compute(("xtts", "digest-1"), analyse)  # another engine, another entry
    assert hit_other is False and calls == ["analysed", "analysed"]


def test_clear_and_discard() -> None:
    cache: ConditioningCache[int] = ConditioningCache(max_entries=3)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.discard("a")
    assert cache.get("a") is None and cache.get("b") == 2
    cache.clear()
    assert len(cache) == 0


def test_bound_holds_under_threads() -> None:
    cache: ConditioningCache[int] = ConditioningCache(max_entries=8)

    def writer(offset: int) -> None:
        for i in range(500):
            cache.put(offset + i, i)
            cache.get(offset + i // 2)

    threads = [threading.Thread(target=writer, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 8


def test_a_zero_bound_is_refused() -> None:
    with pytest.raises(ValueError):
        ConditioningCache(max_entries=0)


def test_a_deleted_voice_is_dropped_from_every_model_and_others_stay() -> None:
    cache: ConditioningCache[str] = ConditioningCache(max_entries=8)
    cache.put(("chatterbox", "english", "d1"), "en-1")
    cache.put(("chatterbox", "multilingual", "d1"), "ml-1")
    cache.put(("chatterbox", "multilingual", "d2"), "ml-2")
    cache.put(("xtts", "d1"), "x-1")
    assert cache.discard_reference("d1") == 3
    assert len(cache) == 1 and ("chatterbox", "multilingual", "d2") in cache
    assert cache.discard_reference("d1") == 0


def test_what_is_computed_from_a_discarded_clip_is_not_kept_again_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthesis that resolved the clip before the erasure computes it again: used once, never kept."""
    cache: ConditioningCache[str] = ConditioningCache(max_entries=8)
    cache.put(("chatterbox", "multilingual", "d1"), "ml-1")
    assert cache.discard_reference("d1") == 1
    value, hit = cache.get_or_compute(("chatterbox", "multilingual", "d1"), lambda: "again")
    assert (value, hit) == ("again", False) and len(cache) == 0
    cache.put(("chatterbox", "multilingual", "d2"), "ml-2")  # other clips are kept as before
    assert ("chatterbox", "multilingual", "d2") in cache
    later = conditioning_cache.time.monotonic() + conditioning_cache.FORGOTTEN_GUARD_S + 1
    monkeypatch.setattr(conditioning_cache.time, "monotonic", lambda: later)
    cache.put(("chatterbox", "multilingual", "d1"), "recreated")  # the same clip, uploaded again much later
    assert ("chatterbox", "multilingual", "d1") in cache
