"""DB pool monitoring: SQLAlchemy pool events become rows (for ``probes.pool()``) and metrics.

Every pool event (``connect``, ``checkout``, ``checkin``, ``reset``, ``invalidate``, ``soft_invalidate``,
``close``, ``detach``, ``close_detached``) is recorded with the pool's state right after it, so
utilisation can be plotted over time without sampling. A checkin carries how long the connection was
out; a checkout carries how long getting it took. SQLAlchemy has no "checkout requested" event, so that
latency is measured by wrapping the engine's ``pool.connect`` (what ``Engine.raw_connection`` calls).

The SQLAlchemy engine's pool is watched through its events; on PostgreSQL the asyncpg pool of the raw
step path (lease peeks, vector refreshes, uploads) through :class:`AsyncpgPoolMonitor`. The per-step commits
go through the step writer's own connection (store/sqlite/step_writer.py, store/postgres/step_writer.py) and
show up as ``db.transaction`` spans instead.

Invariants: the listeners never raise into SQLAlchemy, take no lock and do O(1) work (one append);
:meth:`PoolMonitor.detach` removes every listener and the wrapper, so a closed runtime's engine holds
no reference to its monitor.
"""

from __future__ import annotations

import collections
import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

__all__ = ["AsyncpgPoolMonitor", "PoolMonitor", "PoolEvent", "POOL_EVENTS"]

POOL_EVENTS = ("connect", "checkout", "checkin", "reset", "invalidate", "soft_invalidate", "close", "detach",
               "close_detached")


class PoolEvent:
    """One pool event and the pool's state just after it. ``latency_ms`` is filled in on checkout."""

    __slots__ = ("at", "event", "connection", "held_ms", "latency_ms", "checked_out", "idle", "overflow",
                 "capacity")

    def __init__(self, at: float, event: str, connection: int, held_ms: float | None, state: tuple[int, int, int, int]):
        self.at, self.event, self.connection, self.held_ms = at, event, connection, held_ms
        self.latency_ms: float | None = None
        self.checked_out, self.idle, self.overflow, self.capacity = state


class PoolMonitor:
    def __init__(self, engine: Any, sink: Callable[[PoolEvent], None], *, history: int = 100_000) -> None:
        self._engine = engine.sync_engine if hasattr(engine, "sync_engine") else engine
        self._sink = sink
        self.events: collections.deque[PoolEvent] = collections.deque(maxlen=history)
        self._ids = itertools.count(1)
        self._last_checkout: PoolEvent | None = None
        self._listeners: list[tuple[str, Callable[..., None]]] = []
        for name in POOL_EVENTS:
            fn = functools.partial(self._on_event, name)
            sa.event.listen(self._engine, name, fn)
            self._listeners.append((name, fn))
        self._pool = self._engine.pool
        self._pool.connect = self._timed_connect

    def detach(self) -> None:
        for name, fn in self._listeners:
            if sa.event.contains(self._engine, name, fn):
                sa.event.remove(self._engine, name, fn)
        self._listeners = []
        self._pool.__dict__.pop("connect", None)

    def snapshot(self) -> dict[str, int]:
        """The ``gauge_db_pool_connections_*`` values now."""
        checked_out, idle, overflow, _ = self._state()
        return {
            "gauge_db_pool_connections_total": checked_out + idle,
            "gauge_db_pool_connections_checked_out": checked_out,
            "gauge_db_pool_connections_available": idle,
            "gauge_db_pool_connections_overflow": overflow,
        }

    def _state(self) -> tuple[int, int, int, int]:
        pool = self._engine.pool
        try:
            size = pool.size()
            overflow = max(0, pool.overflow())
            capacity = size + max(0, getattr(pool, "_max_overflow", 0))
            return pool.checkedout(), pool.checkedin(), overflow, capacity
        except (AttributeError, NotImplementedError):  # pools without a queue (NullPool, StaticPool)
            return 0, 0, 0, 0

    def _on_event(self, name: str, dbapi_conn: Any = None, record: Any = None, *rest: Any) -> None:
        try:
            info = getattr(record, "info", None)
            held = None
            if info is not None:
                conn_id = info.get("letta_nb_id")
                if conn_id is None:
                    conn_id = info["letta_nb_id"] = next(self._ids)
                if name == "checkout":
                    info["letta_nb_out"] = time.perf_counter()
                elif name == "checkin":
                    out = info.pop("letta_nb_out", None)
                    held = None if out is None else (time.perf_counter() - out) * 1000
            else:
                conn_id = 0
            state = self._state()
            if name == "checkin" and state[0] > 0:  # the event fires just before the pool takes it back
                state = (state[0] - 1, state[1] + 1, state[2], state[3])
            event = PoolEvent(time.time(), name, conn_id, held, state)
            self.events.append(event)
            if name == "checkout":
                self._last_checkout = event
            self._sink(event)
        except Exception:  # monitoring must never break a connection checkout
            pass

    def _timed_connect(self) -> Any:
        self._last_checkout = None
        start = time.perf_counter()
        conn = type(self._pool).connect(self._pool)
        self._time_checkout(start)
        return conn

    def _time_checkout(self, start: float) -> None:
        # _on_event("checkout") set _last_checkout inside connect(): a separate method, so the checker does not
        # assume it is still the None assigned before the call
        event = self._last_checkout
        if event is not None:  # no await between the checkout event and here: it is this checkout's
            event.latency_ms = (time.perf_counter() - start) * 1000


class AsyncpgPoolMonitor:
    """The same rows for an asyncpg pool (PostgreSQL's step writer reads, lease peeks, vector refreshes, uploads):
    a ``checkout`` per ``pool.acquire()`` with how long getting the connection took, a ``checkin`` per release
    with how long it was out, each with the pool's state after it (asyncpg's ``get_size``/``get_idle_size``).

    asyncpg has no pool events and its ``Pool`` has slots (no method can be wrapped on the instance), so the
    monitor *is* the pool its users get: ``acquire`` is timed, everything else is the pool's own. Every use in
    letta_nb is ``async with pool.acquire() as conn``. O(1) work per acquire; it never raises into a checkout.
    """

    def __init__(self, pool: Any, *, history: int = 100_000) -> None:
        self._pool = pool
        self.events: collections.deque[PoolEvent] = collections.deque(maxlen=history)
        self._ids: dict[int, int] = {}  # server pid -> connection number (1, 2, ...)
        self.acquires = 0

    def __getattr__(self, name: str) -> Any:  # the pool's own methods (close, get_size, ...)
        return getattr(self._pool, name)

    def state(self) -> tuple[int, int, int, int]:
        """``(in use, idle, 0, max size)``: the columns of a :class:`PoolEvent` (asyncpg pools do not overflow)."""
        try:
            size, idle = self._pool.get_size(), self._pool.get_idle_size()
            return max(size - idle, 0), idle, 0, self._pool.get_max_size()
        except Exception:  # a closed pool
            return 0, 0, 0, 0

    def acquire(self, *, timeout: float | None = None) -> _TimedAcquire:
        """The pool's ``acquire``, timed (``async with``)."""
        return _TimedAcquire(self, self._pool.acquire(timeout=timeout))

    def _number(self, conn: Any) -> int:
        try:
            return self._ids.setdefault(conn.get_server_pid(), len(self._ids) + 1)
        except Exception:
            return 0

    def _record(self, event: str, number: int, held_ms: float | None, latency_ms: float | None) -> None:
        try:
            row = PoolEvent(time.time(), event, number, held_ms, self.state())
            row.latency_ms = latency_ms
            self.events.append(row)
        except Exception:  # monitoring must never break a checkout
            pass


class _TimedAcquire:
    """``async with pool.acquire() as conn`` through :class:`AsyncpgPoolMonitor`."""

    __slots__ = ("_monitor", "_inner", "_number", "_out")

    def __init__(self, monitor: AsyncpgPoolMonitor, inner: Any) -> None:
        self._monitor, self._inner = monitor, inner
        self._number = 0
        self._out = 0.0

    async def __aenter__(self) -> Any:
        start = time.perf_counter()
        conn = await self._inner.__aenter__()
        self._out = time.perf_counter()
        monitor = self._monitor
        monitor.acquires += 1
        self._number = monitor._number(conn)
        monitor._record("checkout", self._number, None, (self._out - start) * 1000)
        return conn

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._inner.__aexit__(*exc)
        finally:
            self._monitor._record("checkin", self._number, (time.perf_counter() - self._out) * 1000, None)
