"""DB pool monitoring: SQLAlchemy pool events become rows (for ``probes.pool()``) and metrics.

Every pool event (``connect``, ``checkout``, ``checkin``, ``reset``, ``invalidate``, ``soft_invalidate``,
``close``, ``detach``, ``close_detached``) is recorded with the pool's state right after it, so
utilisation can be plotted over time without sampling. A checkin carries how long the connection was
out; a checkout carries how long getting it took. SQLAlchemy has no "checkout requested" event, so that
latency is measured by wrapping the engine's ``pool.connect`` (what ``Engine.raw_connection`` calls).

Only the async engine's pool is seen: the runtime's per-step commits go through the step writer's own
DB-API connection (see :mod:`letta_nb.store.sqlite.step_writer`) and show up as ``db.transaction`` spans instead.

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

__all__ = ["PoolMonitor", "PoolEvent", "POOL_EVENTS"]

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
