"""TTLCache and CacheRegistry: counters, TTL with a fake clock, LRU order, single-flight and the generation guard."""

from __future__ import annotations

import asyncio
import threading

import pytest

from letta_nb.errors import InvalidArgumentError, LettaNBError
from letta_nb.runtime.cache import CacheNotFoundError, CacheRegistry, CacheStats, TTLCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class GatedLoader:
    """A loader that blocks until ``release()``, counting its calls; ``started`` is set when a call begins."""

    def __init__(self, value: object = "loaded", error: BaseException | None = None) -> None:
        self.value, self.error, self.calls = value, error, 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    def release(self) -> None:
        self.gate.set()

    async def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.value


def counts(cache: TTLCache) -> tuple[int, int, int, int, int]:
    s = cache.stats()
    return s.hits, s.misses, s.invalidations, s.evictions, s.expirations


def test_hit_ratio_from_known_hits_and_misses():
    cache: TTLCache[str, int] = TTLCache("t")
    assert cache.stats().hit_ratio == 0.0  # no lookups yet
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1
    assert cache.get("a") == 1
    assert cache.get("zzz") is None
    assert cache.get("zzz", "fallback") == "fallback"
    assert cache.get("b") == 2
    s = cache.stats()
    assert (s.hits, s.misses, s.size, s.maxsize) == (3, 2, 2, 256)
    assert s.hit_ratio == pytest.approx(0.6)
    cache.reset_stats()
    assert counts(cache) == (0, 0, 0, 0, 0) and len(cache) == 2


def test_ttl_expiry_with_fake_clock():
    clock = FakeClock()
    cache: TTLCache[str, str] = TTLCache("t", ttl=10, clock=clock)
    cache.set("a", "x")
    clock.advance(9.999)
    assert cache.get("a") == "x"
    clock.advance(0.001)  # exactly at the deadline: expired
    assert cache.get("a") is None
    assert counts(cache) == (1, 1, 0, 0, 1)
    assert len(cache) == 0

    # `in` and len() respect expiry but count nothing.
    cache.set("b", "y")
    assert "b" in cache and len(cache) == 1
    clock.advance(10)
    assert "b" not in cache and len(cache) == 0 and cache.stats().size == 0
    assert counts(cache) == (1, 1, 0, 0, 1)

    # Rewriting an entry restarts its TTL.
    cache.set("c", 1)
    clock.advance(6)
    cache.set("c", 2)
    clock.advance(6)
    assert cache.get("c") == 2


def test_lru_eviction_order():
    cache: TTLCache[str, int] = TTLCache("t", maxsize=3)
    for i, key in enumerate("abc"):
        cache.set(key, i)
    assert cache.get("a") == 0  # a becomes most recent: LRU order is b, c, a
    cache.set("d", 3)  # evicts b
    assert "b" not in cache and all(k in cache for k in "acd")
    cache.set("c", 20)  # a write refreshes too: order a, d, c
    cache.set("e", 4)  # evicts a
    assert "a" not in cache and all(k in cache for k in "cde")
    assert "c" in cache  # `in` does not refresh recency
    cache.set("f", 5)  # evicts d
    assert sorted(k for k in "abcdef" if k in cache) == ["c", "e", "f"]
    assert cache.stats().evictions == 3 and len(cache) == 3


def test_expired_lru_victim_counts_as_expiration_not_eviction():
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache("t", maxsize=2, ttl=5, clock=clock)
    cache.set("old", 1)
    clock.advance(10)
    cache.set("b", 2)
    cache.set("c", 3)  # the victim "old" had already expired
    assert counts(cache) == (0, 0, 0, 0, 1)
    cache.set("d", 4)  # "b" is live: a real eviction
    assert counts(cache) == (0, 0, 0, 1, 1)


def test_invalidation_counts():
    cache: TTLCache[str, int] = TTLCache("t")
    for key in ("agent:1:core", "agent:1:tools", "agent:2:core", "agent:3:core"):
        cache.set(key, 0)
    assert cache.invalidate("agent:3:core") is True
    assert cache.invalidate("agent:3:core") is False  # already gone: not counted again
    assert cache.invalidate("never") is False
    assert cache.stats().invalidations == 1
    assert cache.invalidate_where(lambda k: k.startswith("agent:1:")) == 2
    assert "agent:1:core" not in cache and "agent:2:core" in cache
    assert cache.stats().invalidations == 3
    cache.set("x", 1)
    cache.clear()
    assert len(cache) == 0 and cache.stats().invalidations == 5
    assert cache.stats().hits == cache.stats().misses == 0  # invalidations are not lookups


def test_invalidating_an_expired_entry_counts_an_expiration():
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache("t", ttl=1, clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)
    clock.advance(2)
    assert cache.invalidate("a") is False
    cache.clear()
    assert counts(cache) == (0, 0, 0, 0, 2)


def test_single_flight_ten_concurrent_gets_call_loader_once():
    cache: TTLCache[str, object] = TTLCache("t")

    async def main() -> list[object]:
        loader = GatedLoader(value={"agent": 1})
        tasks = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(10)]
        await loader.started.wait()
        await asyncio.sleep(0)  # let every task reach the in-flight load before it finishes
        loader.release()
        results = await asyncio.gather(*tasks)
        assert loader.calls == 1
        assert await cache.get_or_load("k", loader) is results[0]  # now cached
        assert loader.calls == 1
        return results

    results = asyncio.run(main())
    assert all(r is results[0] for r in results)
    # The starter counts a miss; the 9 joiners and the later cached lookup count hits.
    assert counts(cache)[:2] == (10, 1)
    assert cache.stats().hit_ratio == pytest.approx(10 / 11)


def test_loader_error_reaches_every_waiter_and_nothing_is_cached():
    cache: TTLCache[str, object] = TTLCache("t")

    async def main() -> None:
        loader = GatedLoader(error=ValueError("store is down"))
        tasks = [asyncio.create_task(cache.get_or_load("k", loader)) for _ in range(5)]
        await loader.started.wait()
        loader.release()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert loader.calls == 1
        assert all(isinstance(r, ValueError) and str(r) == "store is down" for r in results)
        assert "k" not in cache and len(cache) == 0

        retry = GatedLoader(value="ok")
        retry.release()
        assert await cache.get_or_load("k", retry) == "ok"  # the failed load left no flight behind
        assert retry.calls == 1 and cache.get("k") == "ok"

    asyncio.run(main())


def test_generation_guard_invalidate_during_load_is_not_overwritten():
    cache: TTLCache[str, str] = TTLCache("t")

    async def main() -> None:
        stale = GatedLoader(value="stale")
        first = asyncio.create_task(cache.get_or_load("k", stale))
        await stale.started.wait()
        assert cache.invalidate("k") is False  # nothing cached yet, but the load is detached

        # A caller arriving after the invalidation does not join the stale load; it starts its own.
        fresh = GatedLoader(value="fresh")
        second = asyncio.create_task(cache.get_or_load("k", fresh))
        await fresh.started.wait()

        stale.release()
        assert await first == "stale"  # its own caller still gets the result...
        assert "k" not in cache  # ...but it is not stored
        fresh.release()
        assert await second == "fresh"
        assert cache.get("k") == "fresh"
        assert (stale.calls, fresh.calls) == (1, 1)

    asyncio.run(main())


@pytest.mark.parametrize("change", ["set", "invalidate_where", "clear"])
def test_generation_guard_other_changes_during_load(change):
    cache: TTLCache[str, str] = TTLCache("t")

    async def main() -> None:
        stale = GatedLoader(value="stale")
        task = asyncio.create_task(cache.get_or_load("k", stale))
        await stale.started.wait()
        if change == "set":
            cache.set("k", "newer")
        elif change == "invalidate_where":
            assert cache.invalidate_where(lambda k: k == "k") == 0  # in flight only, no live entry
        else:
            cache.clear()
        stale.release()
        assert await task == "stale"
        assert cache.get("k") == ("newer" if change == "set" else None)

    asyncio.run(main())


def test_cancelling_one_caller_does_not_cancel_the_shared_load():
    cache: TTLCache[str, str] = TTLCache("t")

    async def main() -> None:
        loader = GatedLoader(value="v")
        starter = asyncio.create_task(cache.get_or_load("k", loader))
        await loader.started.wait()
        joiner = asyncio.create_task(cache.get_or_load("k", loader))
        await asyncio.sleep(0)
        starter.cancel()
        await asyncio.sleep(0)
        loader.release()
        assert await joiner == "v"
        assert starter.cancelled()
        assert cache.get("k") == "v" and loader.calls == 1

    asyncio.run(main())


def test_on_event_reports_every_counter_and_callback_errors_do_not_break_the_cache():
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    cache: TTLCache[str, int] = TTLCache(
        "agents", maxsize=1, ttl=5, clock=clock, on_event=lambda n, e: seen.append((n, e))
    )
    cache.set("a", 1)
    cache.get("a")
    cache.get("b")
    cache.set("b", 2)  # evicts a
    cache.invalidate("b")
    cache.set("c", 3)
    clock.advance(5)
    cache.get("c")
    assert [e for _, e in seen] == ["hit", "miss", "eviction", "invalidation", "expiration", "miss"]
    assert {n for n, _ in seen} == {"agents"}

    def broken(name: str, event: str) -> None:
        raise RuntimeError("telemetry exporter crashed")

    noisy: TTLCache[str, int] = TTLCache("noisy", on_event=broken)
    noisy.set("a", 1)
    assert noisy.get("a") == 1 and noisy.get("b") is None
    assert counts(noisy)[:2] == (1, 1)


def test_stats_can_be_read_from_another_thread_while_the_cache_is_used():
    cache: TTLCache[int, int] = TTLCache("t", maxsize=50)
    stop = threading.Event()
    snapshots: list[CacheStats] = []

    def reader() -> None:
        while not stop.is_set():
            snapshots.append(cache.stats())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(5000):
            cache.set(i % 80, i)
            cache.get((i * 7) % 80)
    finally:
        stop.set()
        thread.join()
    assert snapshots and all(s.size <= 50 for s in snapshots)
    assert cache.stats().hits + cache.stats().misses == 5000


def test_invalid_settings_are_rejected_with_a_fix():
    with pytest.raises(InvalidArgumentError, match="maxsize must be at least 1"):
        TTLCache("t", maxsize=0)
    with pytest.raises(InvalidArgumentError, match="ttl must be positive"):
        TTLCache("t", ttl=0)


def test_registry_get_or_create_by_name():
    clock = FakeClock()
    events: list[tuple[str, str]] = []
    registry = CacheRegistry(clock=clock, on_event=lambda n, e: events.append((n, e)))
    agents = registry.cache("agents", maxsize=10, ttl=30)
    assert registry.cache("agents", maxsize=10, ttl=30) is agents
    assert registry["agents"] is agents and "agents" in registry
    with pytest.raises(InvalidArgumentError, match=r"registry\['agents'\]"):
        registry.cache("agents", maxsize=99)

    tools = registry.cache("tools")
    assert registry.names() == ["agents", "tools"]
    with pytest.raises(CacheNotFoundError) as info:
        registry["agent"]
    assert info.value.suggestions == ["agents"] and isinstance(info.value, LettaNBError)

    agents.set("a", 1)
    agents.get("a")
    tools.get("missing")
    assert events == [("agents", "hit"), ("tools", "miss")]
    clock.advance(30)  # the registry's clock reaches its caches
    assert "a" not in agents

    tools.set("t", 1)
    registry.clear_all()
    assert len(tools) == 0
    assert [(s.name, s.hits, s.misses, s.invalidations) for s in registry.stats()] == [
        ("agents", 1, 0, 0),  # "a" had expired, so clearing it was an expiration
        ("tools", 0, 1, 1),
    ]
    registry.reset_stats()
    assert all(s.hits == s.misses == s.invalidations == s.expirations == 0 for s in registry.stats())
