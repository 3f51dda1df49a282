"""Performance probes: what the runtime measured, as tidy pandas DataFrames and matplotlib figures.

    import letta_nb
    client = letta_nb.connect()
    ...                                   # run a workload
    letta_nb.probes.tools()               # one row per tool call: tool, status, duration_ms, started_at ...
    letta_nb.probes.tools.plot()          # latency histogram per tool
    letta_nb.probes.plot_percentiles("steps")

Each probe reads the most recently connected client that is still open, or the client (or runtime)
you pass: ``probes.tools(client)``. Probes only read; :func:`reset` forgets everything recorded so far
(run it between the phases of an experiment). Reading a probe also brings the OpenTelemetry metrics and
spans up to date (see :mod:`letta_nb.telemetry.recorder` for why they are fed lazily).

| probe | one row per | main columns |
|---|---|---|
| ``tools()`` | tool call | started_at, agent_id, tool, status, duration_ms, error_type |
| ``steps()`` | agent step | started_at, agent_id, model, llm_ms, tools_ms, db_ms, total_ms, tokens, summary_ms ... |
| ``locks()`` | wait for an agent (its lock here, its lease across kernels) | acquired_at, agent_id, scope, wait_ms |
| ``leases()`` | lease event (acquired, waited, took_expired, refused_commit ...) | at, backend, agent_id, event ... |
| ``cache()`` | named cache (counters since the last reset) | cache, hits, misses, lookups, hit_ratio, ... |
| ``pool()`` | pool event (SQLAlchemy's; asyncpg's on PostgreSQL) | pool, time, event, held_ms, checkout_latency_ms .. |
| ``embedder()`` | embedding request | started_at, embedder, inputs, tokens, duration_ms, status, retries ... |
| ``embedders()`` | embedder (its requests summed) | embedder, requests, errors, throttled, p50_ms, p95_ms ... |
| ``http()`` | request to ``client.serve()`` / ``%letta serve`` | started_at, method, route, status, duration_ms |
| ``spans()`` | OpenTelemetry span | name, trace/span/parent ids, start, end, duration_ms, attributes as columns |
| ``metrics()`` | OpenTelemetry data point | metric, kind, unit, attributes, value / count, sum, min, max |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from letta_nb.errors import InvalidArgumentError, RuntimeClosedError
from letta_nb.telemetry import frames, plots
from letta_nb.telemetry.recorder import live_telemetry

__all__ = ["tools", "steps", "locks", "leases", "cache", "pool", "embedder", "embedders", "spans", "metrics", "reset",
           "http", "runtime", "plot_latency", "plot_percentiles", "plot_pool", "plot_cache"]


def runtime(client: Any = None) -> Any:
    """The runtime probes read: ``client``'s (a Client or a Runtime), else the newest open client's."""
    if client is None:
        open_ones = live_telemetry()
        if not open_ones or open_ones[-1].owner is None:
            raise RuntimeClosedError(
                "No open letta_nb client to probe. Connect first (client = letta_nb.connect()), or pass a "
                "client explicitly: letta_nb.probes.tools(client)."
            )
        return open_ones[-1].owner
    rt = getattr(client, "runtime", client)
    if not hasattr(rt, "telemetry"):
        raise InvalidArgumentError(
            f"probes need a letta_nb Client (from letta_nb.connect()) or its runtime, got {type(client).__name__}."
        )
    return rt


def tools(client: Any = None) -> Any:
    """One row per tool call, oldest first."""
    return frames.tools(list(runtime(client).tool_calls))


def steps(client: Any = None) -> Any:
    """One row per agent step (model call + its tool calls + commit), oldest first."""
    return frames.steps(list(runtime(client).telemetry.steps))


def locks(client: Any = None) -> Any:
    """One row per wait for an agent: ``scope`` "process" (its lock in this kernel: turns of this kernel) or
    "store" (its lease: turns of other kernels on the same store), with how long it queued."""
    rt = runtime(client)
    return frames.locks(list(rt.locks.waits), list(rt.leases.events))


def leases(client: Any = None) -> Any:
    """One row per lease event of this kernel: acquired, reused (kept from the agent's last turn), waited
    (another kernel held it), took_expired (its holder stopped renewing: killed or paused), renewed, released,
    refused_commit (a commit under a lost lease was refused: nothing written), recovered (a refused turn took
    the lease again, ``wait_ms`` after the refusal, and re-ran the step), restarted (a turn's model answer was
    dropped unseen: the read of the kept lease, made while the model ran, found it awaited, lost, or the agent
    changed; the turn ran again), joined (a tool's commit shared its running turn's lease), timed_out
    (AgentBusyError). ``backend`` says where the leases live: redis, postgres
    (lease rows) or sqlite (lease rows)."""
    rt = runtime(client)
    df = frames.leases(list(rt.leases.events))
    df.insert(1, "backend", _lease_backend(rt))
    df["backend"] = df["backend"].astype("string")
    return df


def _lease_backend(rt: Any) -> str:
    if getattr(rt.leases, "redis_url", None) is not None:  # runtime/redis_leases.py
        return "redis"
    return "postgres" if getattr(rt.store.location, "sqlite_path", "") is None else "sqlite"


def cache(client: Any = None) -> Any:
    """One row per named cache: counters since the last reset and the hit ratio."""
    return frames.cache(runtime(client).caches.stats())


def pool(client: Any = None) -> Any:
    """One row per pool event, with that pool's state just after it: ``pool`` is ``sqlalchemy`` (the engine's,
    portable reads) or, on PostgreSQL, ``asyncpg`` (the raw step path's: lease peeks, vector refreshes,
    uploads; a checkout per acquire with its latency, a checkin with how long it was held)."""
    import pandas as pd

    rt = runtime(client)
    monitor = rt.telemetry.pool
    df = frames.pool(list(monitor.events) if monitor is not None else [])
    df.insert(0, "pool", "sqlalchemy")
    pg = getattr(rt.store, "pg_pool_monitor", None)
    if pg is not None:
        extra = frames.pool(list(pg.events))
        extra.insert(0, "pool", "asyncpg")
        df = pd.concat([df, extra], ignore_index=True).sort_values("time", kind="stable", ignore_index=True)
    df["pool"] = df["pool"].astype("string")
    return df


def embedder(client: Any = None) -> Any:
    """One row per embedding request made by the runtime's embedders (batching embedders report them)."""
    return frames.embedder(list(runtime(client).telemetry.embed_batches))


def embedders(client: Any = None) -> Any:
    """One row per embedder that made requests: totals, errors, 429s and latency percentiles."""
    return frames.embedders(list(runtime(client).telemetry.embed_batches))


def http(client: Any = None) -> Any:
    """One row per HTTP request the client's Letta REST server answered (``client.serve()``): ``route`` is the
    template (``/v1/agents/{agent_id}/messages``), so rows group by endpoint, never by id."""
    return frames.http(list(runtime(client).telemetry.http_requests))


def spans(client: Any = None) -> Any:
    """One row per finished OpenTelemetry span (agent.step, llm.call, tool.call, db.transaction, embed.batch)."""
    return frames.spans(runtime(client).telemetry.finished_spans())


def metrics(client: Any = None) -> Any:
    """One row per OpenTelemetry data point of the runtime's MeterProvider (names in telemetry.names)."""
    return frames.metrics(runtime(client).telemetry.metrics_data())


def reset(client: Any = None) -> None:
    """Forget every record, counter, metric and span so far (cached data itself is kept)."""
    rt = runtime(client)
    rt.tool_calls.clear()
    rt.locks.waits.clear()
    rt.leases.events.clear()
    rt.telemetry.reset()
    if (pg := getattr(rt.store, "pg_pool_monitor", None)) is not None:
        pg.events.clear()


# ---- plots -----------------------------------------------------------------------------------------------
# kind -> (probe, duration column, time column, group-by column)
_LATENCY: dict[str, tuple[Callable[[Any], Any], str, str, str | None]] = {
    "tools": (tools, "duration_ms", "started_at", "tool"),
    "steps": (steps, "total_ms", "ended_at", None),
    "llm": (steps, "llm_ms", "ended_at", "model"),
    "ttft": (steps, "ttft_ms", "ended_at", "model"),
    "locks": (locks, "wait_ms", "acquired_at", None),
    "embedder": (embedder, "duration_ms", "started_at", "status"),
    "pool": (pool, "checkout_latency_ms", "time", None),
}


def _latency_kind(kind: str) -> tuple[Callable[[Any], Any], str, str, str | None]:
    if kind not in _LATENCY:
        raise InvalidArgumentError(f"kind must be one of {', '.join(_LATENCY)}; got {kind!r}.")
    return _LATENCY[kind]


def plot_latency(kind: str = "tools", client: Any = None, *, by: str | None = "default", bins: int = 40,
                 ax: Any = None) -> Any:
    """Latency histogram of ``kind`` (tools, steps, llm, ttft, locks, embedder, pool); returns the Figure."""
    probe, column, _, default_by = _latency_kind(kind)
    return plots.latency_histogram(probe(client), column, by=default_by if by == "default" else by, bins=bins,
                                   ax=ax, title=f"{kind}: {column}")


def plot_percentiles(kind: str = "steps", client: Any = None, *, window: str | None = None, ax: Any = None) -> Any:
    """p50 and p95 latency of ``kind`` per time window (e.g. ``window="500ms"``); returns the Figure."""
    probe, column, time_column, _ = _latency_kind(kind)
    return plots.percentiles_over_time(probe(client), time_column, column, window=window, ax=ax,
                                       title=f"{kind}: {column} p50 / p95 over time")


def plot_pool(client: Any = None, *, ax: Any = None, which: str = "sqlalchemy") -> Any:
    """Connections checked out / open over time against capacity, of one pool (``which``: sqlalchemy, or
    asyncpg on PostgreSQL); returns the Figure."""
    if which not in ("sqlalchemy", "asyncpg"):
        raise InvalidArgumentError(f"plot_pool: which must be 'sqlalchemy' or 'asyncpg', got {which!r}")
    df = pool(client)
    return plots.pool_utilisation(df[df["pool"] == which].reset_index(drop=True), ax=ax,
                                  title=f"DB pool utilisation ({which})")


def plot_cache(client: Any = None, *, ax: Any = None) -> Any:
    """Hit ratio per cache; returns the Figure."""
    return plots.cache_hit_ratio(cache(client), ax=ax)


# ``probes.tools.plot()`` and friends: the natural plot of each probe.
tools.plot = lambda client=None, **kw: plot_latency("tools", client, **kw)  # type: ignore[attr-defined]
steps.plot = lambda client=None, **kw: plot_percentiles("steps", client, **kw)  # type: ignore[attr-defined]
locks.plot = lambda client=None, **kw: plot_latency("locks", client, **kw)  # type: ignore[attr-defined]
embedder.plot = lambda client=None, **kw: plot_latency("embedder", client, **kw)  # type: ignore[attr-defined]
pool.plot = plot_pool  # type: ignore[attr-defined]
cache.plot = plot_cache  # type: ignore[attr-defined]
