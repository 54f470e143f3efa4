"""The in-memory copies of hot cached files: bounded by bytes, least recently used out first, never past the TTL."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from tts_actor.synthesis.memory_cache import MemoryCache


def test_the_least_recently_used_goes_first_and_the_bytes_stay_bounded() -> None:
    memory = MemoryCache(max_bytes=1000)
    memory.put("a", b"a" * 200, {"Content-Type": "audio/wav"}, ttl_s=60)
    memory.put("b", b"b" * 200, {}, ttl_s=60)
    memory.put("c", b"c" * 200, {}, ttl_s=60)
    assert memory.get("a") is not None  # a is now the most recent: b goes first
    memory.put("d", b"d" * 250, {}, ttl_s=60)
    memory.put("e", b"e" * 250, {}, ttl_s=60)
    assert memory.get("b") is None and memory.get("a") is not None and "e" in memory
    assert memory.bytes <= 1000 and memory.bytes == sum(len(memory.get(k).data) for k in "acde" if k in memory)  # type: ignore[union-attr]
    assert REGISTRY.get_sample_value("tts_audio_cache_memory_bytes") == memory.bytes


def test_a_file_over_a_quarter_of_the_bound_is_not_kept() -> None:
    memory = MemoryCache(max_bytes=1000)
    memory.put("big", b"x" * 251, {}, ttl_s=60)
    memory.put("empty", b"", {}, ttl_s=60)
    assert len(memory) == 0 and memory.bytes == 0
    off = MemoryCache(max_bytes=0)
    off.put("k", b"x", {}, ttl_s=60)
    assert off.get("k") is None


def test_an_entry_never_outlives_the_stores_ttl() -> None:
    memory = MemoryCache(max_bytes=1000)
    memory.put("old", b"x" * 10, {}, ttl_s=-1)  # already aged out of the store: not kept
    memory.put("soon", b"x" * 10, {}, ttl_s=0.01)
    assert "old" not in memory and memory.get("soon") is not None
    time.sleep(0.02)  # a clock bound, not a sync
    assert memory.get("soon") is None and memory.bytes == 0


def test_invalidate_and_clear_keep_the_byte_count_right() -> None:
    memory = MemoryCache(max_bytes=1000)
    memory.put("a", b"a" * 100, {}, ttl_s=60)
    memory.put("b", b"b" * 100, {}, ttl_s=60)
    memory.put("a", b"a" * 50, {}, ttl_s=60)  # replaced, not counted twice
    assert memory.bytes == 150
    assert memory.invalidate("a") and not memory.invalidate("a")
    assert memory.bytes == 100
    memory.clear()
    assert memory.bytes == 0 and len(memory) == 0
