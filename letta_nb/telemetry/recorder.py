"""The runtime's telemetry: cheap records on the hot path, OpenTelemetry metrics and spans on flush.

Cost model. The agent loop calls :meth:`Telemetry.on_step` once per step and :meth:`on_tool` once per
tool call; the lock table calls :meth:`on_lock_wait` once per turn. Each appends a small record to a
deque (well under a microsecond). Feeding OpenTelemetry (instrument ``add``/``record`` calls, span
building) costs tens of microseconds a step on this machine, so it is deferred to :meth:`flush`, which
runs when anything reads telemetry (every probe, ``metrics()``, ``spans()``), periodically when OTLP
export is configured, at close, and in small chunks on the hot path only once more than ``max_pending``
records wait (so memory stays bounded in a session nobody reads). ``max_pending`` is ``history``'s size: a
waiting record is a tuple of ~60 bytes beside the record the probes keep anyway (~8 MB at the bound), while
feeding a turn's three records (step, tool call, lock wait: spans included) costs ~0.18 ms of CPU, more than
the turn's own Python (issue 19: ``bench concurrency --agents 1000 --messages 5`` passed the old bound of
20,000 and fed 7,000 records mid-run, OpenTelemetry's import included).

Invariants:
- Every record reaches the OpenTelemetry instruments exactly once, in the order it was recorded; a read
  sees everything recorded before it started.
- Tool calls become children of their step's span: a step's tool records precede its step record, and
  are matched by agent id (a turn holds its agent's lock, so an agent has one step in flight).
- Cache counters are not hooked at all: the caches count for themselves and flush adds the difference
  since the last flush.
- Providers belong to this object (see :mod:`letta_nb.telemetry.providers`); :meth:`reset` replaces
  them, :meth:`close` shuts them down.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from typing import Any

from letta_nb.telemetry.pool import PoolEvent, PoolMonitor
from letta_nb.telemetry.providers import Providers, otlp_settings
from letta_nb.telemetry.spans import StepRecord, emit_embed_batch, emit_step, emit_tool

__all__ = ["Telemetry", "StepRecord", "live_telemetry"]

_LIVE: list[weakref.ref[Telemetry]] = []  # in connect order; probes use the newest open one
_OTLP_INTERVAL_S = 5.0
_CHUNK = 256


def live_telemetry() -> list[Telemetry]:
    """Open telemetries, oldest first."""
    alive = [t for t in (ref() for ref in _LIVE) if t is not None and not t.closed]
    _LIVE[:] = [weakref.ref(t) for t in alive]
    return alive


class Telemetry:
    def __init__(self, owner: Any = None, *, history: int = 100_000, max_pending: int = 100_000,
                 max_spans: int = 50_000) -> None:
        self._owner = weakref.ref(owner) if owner is not None else None
        self.otlp = otlp_settings()  # raises now, at connect(), if OTLP is asked for but cannot work
        self.steps: collections.deque[StepRecord] = collections.deque(maxlen=history)
        self.embed_batches: collections.deque[Any] = collections.deque(maxlen=history)
        self.http_requests: collections.deque[Any] = collections.deque(maxlen=history)  # letta_nb.serve
        self.pool: PoolMonitor | None = None
        self._caches: Any = None
        self._cache_seen: dict[tuple[str, str], int] = {}
        self._pending: collections.deque[tuple[str, Any]] = collections.deque()
        self._max_pending = max_pending
        self._max_spans = max_spans
        self._open_tools: dict[str, list[Any]] = {}
        self._providers: Providers | None = None
        self._flush_lock = threading.RLock()
        self._timer: Any = None
        self.closed = False
        _LIVE.append(weakref.ref(self))

    @property
    def owner(self) -> Any:
        return self._owner() if self._owner is not None else None

    # ---- wiring (called once by the runtime) ---------------------------------------------------------
    def watch_pool(self, engine: Any) -> None:
        self.pool = PoolMonitor(engine, self._on_pool_event)

    def watch_caches(self, registry: Any) -> None:
        self._caches = registry

    def start(self, loop: Any) -> None:
        """With OTLP configured, flush every few seconds on ``loop`` so exports carry fresh numbers."""
        if self.otlp is not None and self._timer is None:
            self._timer = loop.call_later(_OTLP_INTERVAL_S, self._tick, loop)

    def _tick(self, loop: Any) -> None:
        if self.closed:
            return
        self.flush()
        self._timer = loop.call_later(_OTLP_INTERVAL_S, self._tick, loop)

    # ---- hot path: one append each ---------------------------------------------------------------------
    def on_step(self, agent_id: str, model: str, stats: Any, ttft_ms: float | None = None) -> None:
        rec = StepRecord(time.time(), agent_id, model, stats, ttft_ms)
        self.steps.append(rec)
        self._push(("step", rec))

    def on_tool(self, record: Any) -> None:
        self._push(("tool", record))

    def on_lock_wait(self, agent_id: str, wait_ms: float) -> None:
        self._push(("lock", wait_ms))

    def on_embed_batch(self, batch: Any) -> None:
        self.embed_batches.append(batch)
        self._push(("embed", batch))

    def on_http(self, record: Any) -> None:
        """A request letta_nb.serve answered (called on the server's thread: a deque append is atomic)."""
        self.http_requests.append(record)

    def _on_pool_event(self, event: PoolEvent) -> None:
        self._push(("pool", event))

    def _push(self, item: tuple[str, Any]) -> None:
        self._pending.append(item)
        if len(self._pending) > self._max_pending:
            self.flush(_CHUNK)

    # ---- flush: records -> OpenTelemetry -----------------------------------------------------------------
    @property
    def providers(self) -> Providers:
        if self._providers is None:
            gauges = self.pool.snapshot if self.pool is not None else dict
            self._providers = Providers(otlp=self.otlp, max_spans=self._max_spans, gauges=gauges)
        return self._providers

    def flush(self, limit: int | None = None) -> None:
        """Feed pending records (at most ``limit``) and cache counter changes to OpenTelemetry."""
        with self._flush_lock:
            p = self.providers
            n = 0
            while limit is None or n < limit:
                try:
                    kind, rec = self._pending.popleft()
                except IndexError:
                    break
                n += 1
                self._feed(p, kind, rec)
            if limit is None:
                self._feed_caches(p)

    def _feed(self, p: Providers, kind: str, rec: Any) -> None:
        if kind == "tool":
            attrs = {"tool": rec.name, "status": rec.status}
            p.add("count_tool_execution", 1, attrs)
            p.record("hist_tool_execution_time_ms", rec.duration_ms, attrs)
            if rec.agent_id:
                self._open_tools.setdefault(rec.agent_id, []).append(rec)
            else:
                emit_tool(p.tracer, rec)
        elif kind == "step":
            s, model = rec.stats, {"model": rec.model}
            if s.step_index == 0:
                p.add("count_user_message", 1, model)
            p.record("hist_step_execution_time_ms", s.total_ms, model)
            p.record("hist_llm_execution_time_ms", s.llm_ms, model)
            p.record("hist_db_transaction_time_ms", s.db_ms)
            if rec.ttft_ms is not None:
                p.record("hist_ttft_ms", rec.ttft_ms, model)
            tools = self._open_tools.pop(rec.agent_id, [])
            step_start = rec.ended_at - s.total_ms / 1000 - 0.001
            for orphan in (t for t in tools if t.started_at < step_start):  # from a turn that was cancelled
                emit_tool(p.tracer, orphan)
            emit_step(p.tracer, rec, [t for t in tools if t.started_at >= step_start])
        elif kind == "lock":
            p.record("hist_lock_wait_ms", rec)
        elif kind == "pool":
            p.add("count_db_pool_connection_events", 1, {"event": rec.event})
            if rec.held_ms is not None:
                p.record("hist_db_pool_connection_duration_ms", rec.held_ms)
            if rec.latency_ms is not None:
                p.record("hist_db_pool_checkout_latency_ms", rec.latency_ms)
        elif kind == "embed":
            status = {"status": str(rec.status)}
            p.add("count_embedder_batches", 1, status)
            p.add("count_embedder_inputs", rec.inputs)
            p.add("count_embedder_retries", rec.retries)
            p.add("count_embedder_splits", rec.splits)
            p.record("hist_embedder_batch_time_ms", rec.duration_ms, status)
            emit_embed_batch(p.tracer, rec)

    def _feed_caches(self, p: Providers) -> None:
        if self._caches is None:
            return
        for stats in self._caches.stats():
            for field, metric in (("hits", "count_cache_hits"), ("misses", "count_cache_misses"),
                                  ("invalidations", "count_cache_invalidations"),
                                  ("evictions", "count_cache_evictions")):
                now = getattr(stats, field)
                key = (stats.name, field)
                delta = now - self._cache_seen.get(key, 0)
                if delta < 0:  # the cache's counters were reset elsewhere: count from zero again
                    delta = now
                if delta:
                    p.add(metric, delta, {"cache": stats.name})
                self._cache_seen[key] = now

    # ---- reads -----------------------------------------------------------------------------------------
    def metrics_data(self) -> Any:
        self.flush()
        return self.providers.collect()

    def finished_spans(self) -> tuple[Any, ...]:
        self.flush()
        return self.providers.span_exporter.get_finished_spans()

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every record, metric and span (fresh providers); the caches' counters are reset too."""
        with self._flush_lock:
            self._pending.clear()
            self._open_tools.clear()
            self.steps.clear()
            self.embed_batches.clear()
            self.http_requests.clear()
            if self.pool is not None:
                self.pool.events.clear()
            if self._caches is not None:
                self._caches.reset_stats()
            self._cache_seen.clear()
            if self._providers is not None:
                self._providers.shutdown()
                self._providers = None

    def close(self) -> None:
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self.otlp is not None:
            self.flush()  # the last numbers go out before the exporters shut down
        self.closed = True
        if self.pool is not None:
            self.pool.detach()
        if self.otlp is not None and self._providers is not None:
            self._providers.shutdown()  # in-memory providers stay readable: probes(client) after close

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Telemetry {state} steps={len(self.steps)} pending={len(self._pending)}>"
