"""Spans built after the fact from timings the runtime already recorded.

Why not live spans around each await: an SDK span costs tens of microseconds to start, end and export,
a step would need four or more, and the step benchmark's whole per-message overhead budget is a couple of
milliseconds. The agent loop already measures every phase (:class:`~letta_nb.schemas.StepStats`, one
record per tool call with its wall-clock start), so a step's span tree is rebuilt from those numbers
when telemetry is flushed, with explicit start and end times:

    agent.step                 [end - total_ms, end]
      llm.call                 [start, start + llm_ms]
      tool.call  (one per call, at its own recorded start)
      db.transaction           [end - db_ms, end]

The times are as exact as the recorded durations; only the commit's start is inferred (commits end the
step). Embedding requests become ``embed.batch`` spans on their own traces.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["StepRecord", "emit_step", "emit_tool", "emit_embed_batch"]


class StepRecord(NamedTuple):
    """One finished step: when it ended (``time.time()``), whose, which model, its stats and TTFT."""

    ended_at: float
    agent_id: str
    model: str
    stats: Any  # letta_nb.schemas.StepStats
    ttft_ms: float | None


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def emit_step(tracer: Any, rec: StepRecord, tools: Iterable[Any]) -> None:
    from opentelemetry import trace

    s = rec.stats
    end = _ns(rec.ended_at)
    start = end - int(s.total_ms * 1e6)
    step = tracer.start_span("agent.step", start_time=start, attributes={
        "agent_id": rec.agent_id, "step_id": s.id, "step_index": s.step_index, "model": rec.model,
        "stop_reason": s.stop_reason or "", "tools": ",".join(s.tool_names),
    })
    ctx = trace.set_span_in_context(step)
    llm_attrs: dict[str, Any] = {"agent_id": rec.agent_id, "model": rec.model, "prompt_tokens": s.prompt_tokens,
                                 "completion_tokens": s.completion_tokens}
    if rec.ttft_ms is not None:
        llm_attrs["ttft_ms"] = rec.ttft_ms
    tracer.start_span("llm.call", context=ctx, start_time=start, attributes=llm_attrs).end(
        end_time=start + int(s.llm_ms * 1e6))
    for tool in tools:
        emit_tool(tracer, tool, ctx)
    tracer.start_span("db.transaction", context=ctx, start_time=end - int(s.db_ms * 1e6),
                      attributes={"agent_id": rec.agent_id, "step_id": s.id}).end(end_time=end)
    step.end(end_time=end)


def emit_tool(tracer: Any, tool: Any, ctx: Any = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    start = _ns(tool.started_at)
    span = tracer.start_span("tool.call", context=ctx, start_time=start, attributes={
        "agent_id": tool.agent_id, "tool": tool.name, "status": tool.status,
    })
    if tool.status != "success":
        span.set_status(Status(StatusCode.ERROR, tool.error_type or "error"))
    span.end(end_time=start + int(tool.duration_ms * 1e6))


def emit_embed_batch(tracer: Any, batch: Any) -> None:
    from opentelemetry.trace import Status, StatusCode

    start = _ns(started_at_seconds(batch.started_at))
    span = tracer.start_span("embed.batch", start_time=start, attributes={
        "inputs": batch.inputs, "tokens": batch.tokens, "status": str(batch.status), "retries": batch.retries,
        "splits": batch.splits, "http_status": batch.http_status or 0,
    })
    if str(batch.status) not in ("ok", "success"):
        span.set_status(Status(StatusCode.ERROR, str(batch.status)))
    span.end(end_time=start + int(batch.duration_ms * 1e6))


def started_at_seconds(value: Any) -> float:
    """Epoch seconds from a ``time.time()`` float or a datetime (embedders may record either)."""
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
