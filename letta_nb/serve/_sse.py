"""A turn's letta_client chunks as Letta's server-sent events.

Letta streams ``data: {json}`` events with no ``event:`` name (the SDK parses only those), then ``data: [DONE]``;
an ``event: error`` carries a failure after the headers have gone out (the SDK raises it as an APIError). Each
message chunk needs an ``id`` and a ``date``. With ``stream_tokens`` every token delta is its own event (the
deltas of one message share an id, as Letta's do); without it, consecutive deltas of one kind are joined into
one message, as Letta sends whole messages per step. ``stop_reason`` and ``usage_statistics`` come last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from letta_nb.api.chunks import (
    ApprovalRequestMessage,
    AssistantMessage,
    LettaChunk,
    LettaStopReason,
    LettaUsageStatistics,
    ReasoningMessage,
    ToolCallMessage,
    ToolReturnMessage,
)
from letta_nb.serve._wire import dumps, stop_reason, usage_json
from letta_nb.store.ids import new_id, utcnow

__all__ = ["DONE", "error_event", "event", "letta_events"]

DONE = b"data: [DONE]\n\n"


def event(body: Any) -> bytes:
    return b"data: " + dumps(body) + b"\n\n"


def error_event(kind: str, message: str) -> bytes:
    return b"event: error\ndata: " + dumps({"error": {"type": kind, "message": message}, "detail": message}) + b"\n\n"


_TEXT = {"assistant_message": "content", "reasoning_message": "reasoning"}


async def letta_events(chunks: AsyncIterator[LettaChunk], *, stream_tokens: bool) -> AsyncIterator[dict[str, Any]]:
    """Letta's stream items for ``chunks`` (``messages.astream(..., letta_chunks=True)``)."""
    kind, msg_id = "", ""  # the message whose deltas are arriving
    parts: list[str] = []
    date = utcnow().isoformat()

    def pending() -> list[dict[str, Any]]:
        if not kind or stream_tokens:
            return []
        return [{"id": msg_id, "date": date, "message_type": kind, _TEXT[kind]: "".join(parts)}]

    async for chunk in chunks:
        if isinstance(chunk, (AssistantMessage, ReasoningMessage)):
            text = chunk.content if isinstance(chunk, AssistantMessage) else chunk.reasoning
            if chunk.message_type != kind:
                for item in pending():
                    yield item
                kind, msg_id, parts, date = chunk.message_type, new_id("message"), [], utcnow().isoformat()
            parts.append(text)
            if stream_tokens:
                yield {"id": msg_id, "date": date, "message_type": kind, _TEXT[kind]: text}
            continue
        for item in pending():
            yield item
        kind = ""
        other = _other(chunk)
        if other is not None:
            yield other
    for item in pending():
        yield item


def _other(chunk: LettaChunk) -> dict[str, Any] | None:
    base = {"id": new_id("message"), "date": utcnow().isoformat(), "message_type": chunk.message_type}
    if isinstance(chunk, (ToolCallMessage, ApprovalRequestMessage)):
        call = {"name": chunk.tool_call.name, "arguments": chunk.tool_call.arguments,
                "tool_call_id": chunk.tool_call.tool_call_id}
        return {**base, "tool_call": call}
    if isinstance(chunk, ToolReturnMessage):
        return {**base, "tool_return": chunk.tool_return, "tool_call_id": chunk.tool_call_id, "name": chunk.name,
                "status": "error" if chunk.status == "error" else "success"}
    if isinstance(chunk, LettaStopReason):
        return {"message_type": "stop_reason", "stop_reason": stop_reason(chunk.stop_reason)}
    if isinstance(chunk, LettaUsageStatistics):
        return usage_json(chunk.prompt_tokens, chunk.completion_tokens, chunk.step_count)
    return None
