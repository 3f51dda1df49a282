"""Named TTL + LRU caches with hit/miss accounting, for the runtime's hot lookups.

The runtime reads the same agent state, tool schemas and embeddings many times per step. A cache in front of
the store removes most of those reads, and its counters show whether it earns its keep. One
:class:`CacheRegistry` per runtime owns every cache by name, so telemetry can list them all and tests can reset them.

Invariants:

* At most ``maxsize`` entries are kept. When the cache is full, the least recently used entry (the one least
  recently read by a hit or written) goes first.
* An expired entry is never returned. A lookup that finds one removes it and counts an *expiration* plus a *miss*.
  An expired LRU victim also counts as an expiration, not an eviction. ``len()`` and ``in`` skip expired entries
  and count nothing.
* Every lookup counts exactly one hit or one miss. ``get_or_load`` is single-flight: the caller that starts the
  load counts a miss. Callers that join a load already in flight count a *hit*, because they cost no extra load.
  So when only ``get_or_load`` is used, ``misses`` equals the number of loader calls.
* Generation guard: a load never overwrites newer information. ``set``, ``invalidate``, ``invalidate_where`` and
  ``clear`` detach any load in flight for the keys they touch. A detached load still returns its result to the
  callers already waiting for it, but that result is not stored, and later callers start a fresh load.
* A loader exception reaches every caller sharing that load, and nothing is cached. The load runs in its own task,
  so cancelling one caller does not cancel the load for the others.

Mutations happen under a ``threading.Lock``, so ``stats()`` can be read from any thread. ``on_event`` callbacks
run after the lock is released. An exception raised in a callback is logged and never propagated.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from letta_nb.errors import InvalidArgumentError, NotFoundError

__all__ = ["CacheStats", "TTLCache", "CacheRegistry", "CacheNotFoundError", "EVENTS"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")
EventHook = Callable[[str, str], None]
#: What ``on_event(cache_name, event)`` receives: one call per counter increment.
EVENTS: tuple[str, ...] = ("hit", "miss", "invalidation", "eviction", "expiration")
log = logging.getLogger(__name__)


class CacheNotFoundError(NotFoundError):
    """``registry[name]`` for a cache that was never created; ``suggestions`` holds close names."""

    kind = "cache"


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of one cache's counters. ``size`` counts live (unexpired) entries."""

    name: str
    hits: int
    misses: int
    invalidations: int
    evictions: int
    expirations: int
    size: int
    maxsize: int

    @property
    def hit_ratio(self) -> float:
        """``hits / (hits + misses)``, or 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires_at: float | None


@dataclass(slots=True, eq=False)
class _Flight(Generic[V]):
    """One load in flight. ``detached`` means the key changed mid-load, so the result must not be stored."""

    future: asyncio.Future[V] | None = None
    detached: bool = False


class TTLCache(Generic[K, V]):
    """A thread-safe LRU cache with an optional TTL, single-flight async loading and per-event counters."""

    def __init__(self, name: str, maxsize: int = 256, ttl: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, on_event: EventHook | None = None) -> None:
        if maxsize < 1:
            raise InvalidArgumentError(f"Cache {name!r}: maxsize must be at least 1, got {maxsize}.")
        if ttl is not None and ttl <= 0:
            raise InvalidArgumentError(f"Cache {name!r}: ttl must be positive seconds, or None for no expiry; "
                                       f"got {ttl}.")
        self.name, self.maxsize, self.ttl = name, maxsize, ttl
        self._clock, self._on_event = clock, on_event
        self._lock = threading.Lock()
        self._data: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._flights: dict[K, _Flight[V]] = {}
        self._tasks: set[asyncio.Future[V]] = set()  # strong refs; the event loop keeps only weak ones
        self._counts: dict[str, int] = dict.fromkeys(EVENTS, 0)

    def get(self, key: K, default: D | None = None) -> V | D | None:
        """The cached value, or ``default``. Counts a hit or a miss (plus an expiration if the entry had expired)."""
        events: list[str] = []
        with self._lock:
            entry = self._lookup(key, events)
            self._count("miss" if entry is None else "hit", events)
        self._emit(events)
        return default if entry is None else entry.value

    async def get_or_load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or the result of ``await loader()``. The result is stored unless the key changed
        during the load. Concurrent callers for one key share one loader call: the caller that starts it counts a
        miss, the callers that join it count hits, and all of them get the loader's exception if it raises."""
        events: list[str] = []
        with self._lock:
            entry = self._lookup(key, events)
            flight = None if entry is not None else self._flights.get(key)
            self._count("miss" if entry is None and flight is None else "hit", events)
            if entry is None and flight is None:
                flight = self._flights[key] = _Flight()
                flight.future = asyncio.ensure_future(self._load(key, loader, flight))
                self._tasks.add(flight.future)
                flight.future.add_done_callback(self._reap)
        self._emit(events)
        if entry is not None:
            return entry.value
        assert flight is not None and flight.future is not None
        return await asyncio.shield(flight.future)

    def peek(self, key: K) -> V | None:
        """The cached value or None, counting nothing (a staleness check is not a use)."""
        with self._lock:
            entry = self._data.get(key)
            return entry.value if entry is not None and self._live(entry, self._clock()) else None

    def __contains__(self, key: object) -> bool:
        with self._lock:
            entry = self._data.get(cast(K, key))  # `in` may ask about any object; a dict lookup takes it as is
            return entry is not None and self._live(entry, self._clock())

    def __len__(self) -> int:
        with self._lock:
            return self._size()

    def set(self, key: K, value: V) -> None:
        """Store ``value`` as the most recently used entry, evicting the LRU entry if the cache is over size."""
        events: list[str] = []
        with self._lock:
            self._detach(key)
            self._store(key, value, events)
        self._emit(events)

    def invalidate(self, key: K) -> bool:
        """Drop ``key``. Returns True, and counts an invalidation, only if a live entry was removed. A load in
        flight for ``key`` is detached either way, so its result will not be stored."""
        events: list[str] = []
        with self._lock:
            self._detach(key)
            removed = self._remove(key, self._clock(), events)
        self._emit(events)
        return removed

    def invalidate_where(self, predicate: Callable[[K], bool]) -> int:
        """Invalidate every cached or loading key where ``predicate(key)`` is true. Returns the number of live
        entries removed."""
        with self._lock:
            keys = list(dict.fromkeys([*self._data, *self._flights]))
        doomed = [key for key in keys if predicate(key)]  # user code runs outside the lock
        events: list[str] = []
        with self._lock:
            now = self._clock()
            for key in doomed:
                self._detach(key)
            removed = sum(self._remove(key, now, events) for key in doomed)
        self._emit(events)
        return removed

    def clear(self) -> None:
        """Drop every entry, counting an invalidation for each live one, and detach every load in flight."""
        events: list[str] = []
        with self._lock:
            for key in list(self._flights):
                self._detach(key)
            now = self._clock()
            for entry in self._data.values():
                self._count("invalidation" if self._live(entry, now) else "expiration", events)
            self._data.clear()
        self._emit(events)

    def stats(self) -> CacheStats:
        with self._lock:
            c = self._counts
            return CacheStats(self.name, c["hit"], c["miss"], c["invalidation"], c["eviction"], c["expiration"],
                              self._size(), self.maxsize)

    def reset_stats(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(EVENTS, 0)

    def __repr__(self) -> str:
        s = self.stats()
        return f"<TTLCache {self.name!r} {s.size}/{s.maxsize} ttl={self.ttl} hit_ratio={s.hit_ratio:.2f}>"

    # Internals. The helpers from _live through _count expect the caller to hold self._lock.

    def _live(self, entry: _Entry[V], now: float) -> bool:
        return entry.expires_at is None or now < entry.expires_at

    def _size(self) -> int:
        now = self._clock()
        return sum(1 for entry in self._data.values() if self._live(entry, now))

    def _lookup(self, key: K, events: list[str]) -> _Entry[V] | None:
        entry = self._data.get(key)
        if entry is not None and not self._live(entry, self._clock()):
            del self._data[key]
            self._count("expiration", events)
            return None
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def _store(self, key: K, value: V, events: list[str]) -> None:
        now = self._clock()
        self._data[key] = _Entry(value, None if self.ttl is None else now + self.ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            _, victim = self._data.popitem(last=False)
            self._count("eviction" if self._live(victim, now) else "expiration", events)

    def _remove(self, key: K, now: float, events: list[str]) -> bool:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._count("invalidation" if self._live(entry, now) else "expiration", events)
        return entry is not None and self._live(entry, now)

    def _detach(self, key: K) -> None:
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.detached = True

    def _count(self, event: str, events: list[str]) -> None:
        self._counts[event] += 1
        if self._on_event is not None:
            events.append(event)

    async def _load(self, key: K, loader: Callable[[], Awaitable[V]], flight: _Flight[V]) -> V:
        events: list[str] = []
        try:
            value = await loader()
            with self._lock:
                if not flight.detached:
                    self._store(key, value, events)
            return value
        finally:
            with self._lock:
                if self._flights.get(key) is flight:  # not replaced by a newer load after a detach
                    del self._flights[key]
            self._emit(events)

    def _reap(self, future: asyncio.Future[V]) -> None:
        self._tasks.discard(future)
        # All callers may have been cancelled: retrieve the exception so asyncio does not log it as never retrieved.
        if not future.cancelled() and future.exception() is not None:
            log.debug("cache %r: load failed: %r", self.name, future.exception())

    def _emit(self, events: list[str]) -> None:
        hook = self._on_event
        if hook is None:
            return
        for event in events:
            try:
                hook(self.name, event)
            except Exception:  # telemetry must never break a lookup
                log.exception("cache %r: on_event callback failed for %r", self.name, event)


class CacheRegistry:
    """Every named cache of one runtime. Modules share a cache by asking for the same name."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, on_event: EventHook | None = None) -> None:
        self._clock, self._on_event = clock, on_event
        self._lock = threading.Lock()
        self._caches: dict[str, TTLCache[Any, Any]] = {}

    def cache(self, name: str, maxsize: int = 256, ttl: float | None = None) -> TTLCache[Any, Any]:
        """The cache called ``name``, created with these settings on first use. Asking again with different
        settings raises, because two callers would otherwise disagree silently about its size or TTL."""
        with self._lock:
            cache = self._caches.get(name)
            if cache is None:
                cache = self._caches[name] = TTLCache(name, maxsize, ttl, clock=self._clock, on_event=self._on_event)
            elif (cache.maxsize, cache.ttl) != (maxsize, ttl):
                raise InvalidArgumentError(
                    f"Cache {name!r} already exists with maxsize={cache.maxsize}, ttl={cache.ttl}; it was requested "
                    f"with maxsize={maxsize}, ttl={ttl}. Use the same settings everywhere, or use registry[{name!r}].")
            return cache

    def __getitem__(self, name: str) -> TTLCache[Any, Any]:
        with self._lock:
            if name not in self._caches:
                raise CacheNotFoundError(name, self._caches, hint="Create it with registry.cache(name).")
            return self._caches[name]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._caches

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._caches)

    def stats(self) -> list[CacheStats]:
        """One snapshot per cache, sorted by name."""
        return [self[name].stats() for name in self.names()]

    def reset_stats(self) -> None:
        for name in self.names():
            self[name].reset_stats()

    def clear_all(self) -> None:
        for name in self.names():
            self[name].clear()
