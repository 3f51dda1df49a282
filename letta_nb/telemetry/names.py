"""The metric registry: every metric letta_nb emits, by name, with its kind, unit and meaning.

Names follow the Letta server's (the "seeds"): ``count_*`` counters, ``hist_*`` histograms in
milliseconds, ``gauge_*`` observable gauges. One table, so docs, probes and OTLP dashboards agree, and a
test can check that every name here is emitted by a known workload.

Attributes are kept low-cardinality on purpose (model, tool, status, cache, event; never agent ids):
an OpenTelemetry aggregation keeps one series per attribute set for the life of the provider, and a
notebook that creates ten thousand agents must not create ten thousand series. Per-agent detail lives in
the probe DataFrames instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MetricSpec", "METRICS", "SPAN_NAMES"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["counter", "histogram", "gauge"]
    unit: str
    description: str


_SPECS = [
    # agent loop
    MetricSpec("count_user_message", "counter", "1", "User messages that started a turn (by model)."),
    MetricSpec("count_tool_execution", "counter", "1", "Tool calls executed (by tool, status)."),
    MetricSpec("hist_tool_execution_time_ms", "histogram", "ms", "Duration of one tool call (by tool, status)."),
    MetricSpec("hist_llm_execution_time_ms", "histogram", "ms", "Model call of one step, stream start to end."),
    MetricSpec("hist_ttft_ms", "histogram", "ms", "Time to the model's first token (by model)."),
    MetricSpec("hist_step_execution_time_ms", "histogram", "ms", "One agent step: model call, tools, commit."),
    MetricSpec("hist_db_transaction_time_ms", "histogram", "ms", "Commit of one step's rows (group commit)."),
    # caches (by cache name)
    MetricSpec("count_cache_hits", "counter", "1", "Cache lookups answered from the cache."),
    MetricSpec("count_cache_misses", "counter", "1", "Cache lookups that had to load."),
    MetricSpec("count_cache_invalidations", "counter", "1", "Live cache entries dropped on purpose."),
    MetricSpec("count_cache_evictions", "counter", "1", "Live cache entries dropped for room (LRU)."),
    # per-agent locks
    MetricSpec("hist_lock_wait_ms", "histogram", "ms", "Time a turn queued for its agent's lock."),
    # embedder (by status)
    MetricSpec("count_embedder_batches", "counter", "1", "Embedding requests sent (by status)."),
    MetricSpec("count_embedder_inputs", "counter", "1", "Texts embedded."),
    MetricSpec("count_embedder_retries", "counter", "1", "Embedding requests retried (429, 5xx, timeouts)."),
    MetricSpec("count_embedder_splits", "counter", "1", "Batches halved after a too-large error."),
    MetricSpec("hist_embedder_batch_time_ms", "histogram", "ms", "One embedding request, send to reply."),
    # SQLAlchemy connection pool
    MetricSpec("count_db_pool_connection_events", "counter", "1",
               "Pool events: connect, checkout, checkin, reset, invalidate, close, ... (by event)."),
    MetricSpec("hist_db_pool_connection_duration_ms", "histogram", "ms", "How long a connection was checked out."),
    MetricSpec("hist_db_pool_checkout_latency_ms", "histogram", "ms", "Time to get a connection from the pool."),
    MetricSpec("gauge_db_pool_connections_total", "gauge", "1", "Open connections (checked out + idle)."),
    MetricSpec("gauge_db_pool_connections_checked_out", "gauge", "1", "Connections in use."),
    MetricSpec("gauge_db_pool_connections_available", "gauge", "1", "Open idle connections ready for checkout."),
    MetricSpec("gauge_db_pool_connections_overflow", "gauge", "1", "Connections open beyond pool_size."),
]

#: name -> spec, in registry order.
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}

#: The span names the runtime produces: a step with its model call, tool calls and commit as children;
#: embedding requests on their own.
SPAN_NAMES = ("agent.step", "llm.call", "tool.call", "db.transaction", "embed.batch")
