"""Telemetry records -> tidy pandas DataFrames (one row per event, span, data point or cache).

Every frame has a fixed schema (column order and dtypes) even when empty, so notebook code like
``df[df.status == "error"].duration_ms.describe()`` works before the first event. Timestamps are
timezone-aware UTC ``datetime64`` columns; durations are float milliseconds named ``*_ms``.
pandas is imported here, lazily: nothing on the ``import letta_nb`` path imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["tools", "steps", "locks", "cache", "pool", "embedder", "spans", "metrics", "http"]

_TIME = "datetime64[ns, UTC]"


def _frame(rows: Iterable[Sequence[Any]], schema: dict[str, str]) -> Any:
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(schema))
    for col, dtype in schema.items():
        if dtype == "time":
            df[col] = pd.to_datetime(df[col].astype("float64"), unit="s", utc=True).astype(_TIME)
        elif dtype == "time_ns":
            df[col] = pd.to_datetime(df[col].astype("Int64"), unit="ns", utc=True).astype(_TIME)
        else:
            df[col] = df[col].astype(dtype)
    return df


def tools(records: Iterable[Any]) -> Any:
    rows = ((r.started_at, r.agent_id, r.name, r.status, r.duration_ms, r.error_type) for r in records)
    return _frame(rows, {"started_at": "time", "agent_id": "string", "tool": "string", "status": "string",
                         "duration_ms": "float64", "error_type": "string"})


def steps(records: Iterable[Any]) -> Any:
    rows = []
    for r in records:
        s = r.stats
        rows.append((r.ended_at - s.total_ms / 1000, r.ended_at, r.agent_id, r.model, s.id, s.step_index,
                     s.llm_ms, s.tools_ms, s.db_ms, s.total_ms, r.ttft_ms, s.prompt_tokens, s.completion_tokens,
                     s.stop_reason, ",".join(s.tool_names), len(s.tool_names), s.summary_ms, s.summary_tokens,
                     s.summary_fallback))
    return _frame(rows, {
        "started_at": "time", "ended_at": "time", "agent_id": "string", "model": "string", "step_id": "string",
        "step_index": "int64", "llm_ms": "float64", "tools_ms": "float64", "db_ms": "float64",
        "total_ms": "float64", "ttft_ms": "float64", "prompt_tokens": "int64", "completion_tokens": "int64",
        "stop_reason": "string", "tools": "string", "n_tools": "int64",
        # compaction before the step's request (runtime/compaction.py); summary_fallback: why the note stood in
        "summary_ms": "float64", "summary_tokens": "int64", "summary_fallback": "string",
    })


_GRANTS = ("acquired", "took_expired", "reused")


def locks(waits: Iterable[Any], lease_events: Iterable[Any] = ()) -> Any:
    """Waits for an agent: ``scope`` "process" for its lock in this process, "store" for its lease across
    processes (runtime/leases.py), oldest first."""
    rows = [(w.acquired_at, w.agent_id, "process", w.wait_ms) for w in waits]
    rows += [(e.at, e.agent_id, "store", e.wait_ms) for e in lease_events if e.event in _GRANTS]
    rows.sort(key=lambda r: r[0])
    return _frame(rows, {"acquired_at": "time", "agent_id": "string", "scope": "string", "wait_ms": "float64"})


def leases(events: Iterable[Any]) -> Any:
    rows = ((e.at, e.agent_id, e.event, e.wait_ms, e.token, e.holder_pid, e.holder_host) for e in events)
    return _frame(rows, {"at": "time", "agent_id": "string", "event": "string", "wait_ms": "float64",
                         "token": "Int64", "holder_pid": "Int64", "holder_host": "string"})


def cache(stats: Iterable[Any]) -> Any:
    rows = ((s.name, s.hits, s.misses, s.hits + s.misses, s.hit_ratio, s.invalidations, s.evictions,
             s.expirations, s.size, s.maxsize) for s in stats)
    return _frame(rows, {"cache": "string", "hits": "int64", "misses": "int64", "lookups": "int64",
                         "hit_ratio": "float64", "invalidations": "int64", "evictions": "int64",
                         "expirations": "int64", "size": "int64", "maxsize": "int64"})


def pool(events: Iterable[Any]) -> Any:
    rows = ((e.at, e.event, e.connection, e.held_ms, e.latency_ms, e.checked_out, e.idle, e.checked_out + e.idle,
             e.overflow, e.capacity, e.checked_out / e.capacity if e.capacity else 0.0) for e in events)
    return _frame(rows, {"time": "time", "event": "string", "connection": "int64", "held_ms": "float64",
                         "checkout_latency_ms": "float64", "checked_out": "int64", "available": "int64",
                         "total": "int64", "overflow": "int64", "capacity": "int64", "utilisation": "float64"})


def embedder(batches: Iterable[Any]) -> Any:
    from letta_nb.telemetry.spans import started_at_seconds

    rows = ((started_at_seconds(b.started_at), b.embedder, b.inputs, b.tokens, b.duration_ms, str(b.status), b.retries,
             b.splits, b.http_status) for b in batches)
    return _frame(rows, {"started_at": "time", "embedder": "string", "inputs": "int64", "tokens": "int64",
                         "duration_ms": "float64", "status": "string", "retries": "int64", "splits": "int64",
                         "http_status": "Int64"})


def embedders(batches: Iterable[Any]) -> Any:
    """One row per embedder: its requests summed up (from the same records as :func:`embedder`)."""
    import pandas as pd

    df = embedder(batches)
    columns = {"embedder": "string", "requests": "int64", "errors": "int64", "throttled": "int64",
               "inputs": "int64", "tokens": "int64", "retries": "int64", "split_batches": "int64",
               "mean_inputs": "float64", "p50_ms": "float64", "p95_ms": "float64", "busy_s": "float64"}
    if df.empty:
        return _frame([], columns)
    ok = df.status == "ok"
    df = df.assign(ok_inputs=df.inputs.where(ok, 0), ok_tokens=df.tokens.where(ok, 0), error=~ok,
                   throttle=df.http_status.eq(429).fillna(False), split=df.splits > 0)
    g = df.groupby("embedder", sort=True)
    out = pd.DataFrame({
        "requests": g.size(), "errors": g.error.sum(), "throttled": g.throttle.sum(), "inputs": g.ok_inputs.sum(),
        "tokens": g.ok_tokens.sum(), "retries": g.retries.sum(), "split_batches": g.split.sum(),
        "mean_inputs": g.inputs.mean(), "p50_ms": g.duration_ms.median(), "p95_ms": g.duration_ms.quantile(0.95),
        "busy_s": g.duration_ms.sum() / 1000,
    }).reset_index()
    return out.astype(columns)[list(columns)]


_SPAN_ATTRS = ("agent_id", "model", "tool", "status", "step_id", "step_index", "stop_reason", "prompt_tokens",
               "completion_tokens", "ttft_ms", "inputs", "tokens", "retries", "splits", "http_status")


def spans(finished: Iterable[Any]) -> Any:
    """One row per span; the runtime's attributes become columns (missing ones are <NA>)."""
    rows = []
    for s in finished:
        a = s.attributes or {}
        parent = s.parent.span_id if s.parent is not None else None
        rows.append((s.name, f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
                     f"{parent:016x}" if parent is not None else None, s.start_time, s.end_time,
                     (s.end_time - s.start_time) / 1e6, s.status.status_code.name,
                     *(a.get(k) for k in _SPAN_ATTRS)))
    schema = {"name": "string", "trace_id": "string", "span_id": "string", "parent_id": "string",
              "start": "time_ns", "end": "time_ns", "duration_ms": "float64", "span_status": "string"}
    schema.update({k: "object" for k in _SPAN_ATTRS})
    df = _frame(rows, schema)
    for k in ("agent_id", "model", "tool", "status", "step_id", "stop_reason"):
        df[k] = df[k].astype("string")
    for k in ("step_index", "prompt_tokens", "completion_tokens", "inputs", "tokens", "retries", "splits",
              "http_status"):
        df[k] = df[k].astype("Int64")
    df["ttft_ms"] = df["ttft_ms"].astype("float64")
    return df


def metrics(data: Any) -> Any:
    """One row per OpenTelemetry data point. Counters and gauges fill ``value``; histograms fill
    ``count``/``sum``/``min``/``max`` (``value`` is their mean). ``attributes`` is ``k=v`` text."""
    from letta_nb.telemetry.names import METRICS

    rows = []
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = METRICS[m.name].kind if m.name in METRICS else type(m.data).__name__.lower()
                for dp in m.data.data_points:
                    attrs = ", ".join(f"{k}={v}" for k, v in sorted((dp.attributes or {}).items()))
                    start = getattr(dp, "start_time_unix_nano", None) or dp.time_unix_nano
                    if hasattr(dp, "bucket_counts"):
                        mean = dp.sum / dp.count if dp.count else float("nan")
                        rows.append((m.name, kind, m.unit, attrs, start, dp.time_unix_nano, mean, dp.count,
                                     dp.sum, dp.min if dp.count else None, dp.max if dp.count else None))
                    else:
                        rows.append((m.name, kind, m.unit, attrs, start, dp.time_unix_nano, dp.value, None, None,
                                     None, None))
    return _frame(rows, {"metric": "string", "kind": "string", "unit": "string", "attributes": "string",
                         "start_time": "time_ns", "time": "time_ns", "value": "float64", "count": "Int64",
                         "sum": "float64", "min": "float64", "max": "float64"})


def http(records: Iterable[Any]) -> Any:
    rows = ((r.started_at, r.method, r.route, r.status, r.duration_ms) for r in records)
    return _frame(rows, {"started_at": "time", "method": "string", "route": "string", "status": "Int64",
                         "duration_ms": "float64"})
