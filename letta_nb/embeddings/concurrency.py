"""How many embedding requests may be in flight to one endpoint: a process-wide, resizable limit.

Letta gates embedding requests with one global semaphore of 3. We keep that default (polite to real
providers, configurable with :func:`configure` or the ``embed_concurrency`` setting) and add an adaptive
mode that finds the endpoint's capacity: slow start (+1 per success, doubling per round trip) until the
first 429, then ``limit = in_flight - 1`` at each 429 (a burst of 429s compounds to the number that
succeeded, which is the endpoint's capacity), then one more request in flight only every ``PROBE_EVERY``
successes: a provider's cap rarely moves, and probing it at TCP's pace (+1 a window) cost a 429, a round
trip plus ``Retry-After``, every ten requests.

Invariants: one :class:`ConcurrencyLimit` per endpoint per event loop (asyncio waiters belong to a loop;
the runtime has one loop, so in the kernel this is process-wide); waiters are served first come first
served, so batches start in input order; a request waiting out ``Retry-After`` does not hold a slot.
"""

from __future__ import annotations

import asyncio
import collections
import math
import weakref

__all__ = ["ConcurrencyLimit", "configure", "limit_for", "DEFAULT_CONCURRENCY"]

DEFAULT_CONCURRENCY = 3
PROBE_EVERY = 64  # successes at the known ceiling before one more request in flight is tried
_overrides: dict[str, object] = {}  # what configure() set; the rest is the settings' (letta_nb/settings.py)
_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ConcurrencyLimit]] = weakref.WeakKeyDictionary()


class ConcurrencyLimit:
    def __init__(self, limit: int = DEFAULT_CONCURRENCY, *, adaptive: bool = False, max_limit: int = 256):
        if limit < 1:
            raise ValueError(f"concurrency must be >= 1, got {limit}")
        self.adaptive = adaptive
        self.max_limit = max(limit, max_limit)
        self._limit = float(limit)
        self._ssthresh = math.inf  # the limit the last 429 left (the endpoint's known ceiling)
        self._calm = 0  # successes since the last 429 or probe at the ceiling
        self.in_flight = 0
        self.peak = 0
        self.throttles = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def __repr__(self) -> str:
        mode = "adaptive" if self.adaptive else "fixed"
        return f"ConcurrencyLimit({self.limit}, {mode}, in_flight={self.in_flight})"

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self._take()
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were handed a slot just as we were cancelled: give it back
            else:
                self._waiters.remove(fut)
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self._take()
                fut.set_result(None)

    def on_success(self) -> None:
        if not self.adaptive or (not self._waiters and self.in_flight < self.limit):
            return  # grow only while the limit is what holds requests back (no credit for idle slots)
        if self._limit >= self._ssthresh:  # at the known ceiling: one probe past it now and then
            self._calm += 1
            if self._calm < PROBE_EVERY:
                return
            self._calm = 0
        self._limit = min(float(self.max_limit), self._limit + 1.0)  # below it: slow start
        self._wake()

    def on_throttle(self) -> None:
        """A 429 arrived for a request that still holds its slot."""
        self.throttles += 1
        if not self.adaptive:
            return
        self._limit = max(1.0, min(self._limit, float(self.in_flight - 1)))
        self._ssthresh = self._limit
        self._calm = 0


def configure(concurrency: int | None = None, adaptive: bool | None = None) -> dict[str, object]:
    """Set the process-wide defaults for endpoints not yet used (and resize the ones in use)."""
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        _overrides["concurrency"] = concurrency
    if adaptive is not None:
        _overrides["adaptive"] = bool(adaptive)
    for per_loop in list(_limits.values()):
        for lim in per_loop.values():
            if concurrency is not None:
                lim._limit, lim._ssthresh = float(concurrency), math.inf
            if adaptive is not None:
                lim.adaptive = bool(adaptive)
    return _defaults()


def _defaults() -> dict[str, object]:
    """The process-wide defaults: :func:`configure`'s, else the ``embed_concurrency`` and ``embed_adaptive``
    settings (``LETTA_NB_EMBED_CONCURRENCY``, ``LETTA_NB_EMBED_ADAPTIVE``, config files)."""
    from letta_nb.settings import current

    settings = current()
    return {"concurrency": settings.embed_concurrency, "adaptive": settings.embed_adaptive, **_overrides}


def limit_for(endpoint: str, concurrency: int | None = None, adaptive: bool | None = None) -> ConcurrencyLimit:
    """The shared limit of ``endpoint`` on the running loop (made from the defaults on first use)."""
    loop = asyncio.get_running_loop()
    per_loop = _limits.setdefault(loop, {})
    lim = per_loop.get(endpoint)
    if lim is None:
        defaults = _defaults()
        lim = per_loop[endpoint] = ConcurrencyLimit(
            concurrency or int(defaults["concurrency"]),  # type: ignore[call-overload]
            adaptive=bool(defaults["adaptive"]) if adaptive is None else adaptive)
    return lim
