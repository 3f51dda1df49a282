"""letta_client's view of a stream: ``messages.stream(..., letta_chunks=True)``.

letta_nb's own events (runtime/events.py) carry Letta's ``message_type`` strings but their own field names
(``text``, ``call_id``), and end with the StopEvent that displays wait for. Code written against
letta_client reads other names: ``chunk.content`` of an assistant message, ``chunk.reasoning``,
``chunk.tool_call.name``, ``chunk.tool_return``, and a last ``usage_statistics`` chunk after the stop
reason. This module maps one to the other, so neither view bends the other; step summaries, which Letta's
stream does not have, are counted into the usage chunk's ``step_count``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from letta_nb.runtime.events import (
    ApprovalRequestEvent,
    AssistantDelta,
    ReasoningDelta,
    StepEvent,
    StopEvent,
    StreamEvent,
    ToolCallEvent,
    ToolReturnEvent,
)

__all__ = ["AssistantMessage", "LettaChunk", "LettaChunks", "LettaStopReason", "LettaUsageStatistics",
           "ReasoningMessage", "ToolCall", "ToolCallMessage", "ToolReturnMessage"]


class LettaChunk:
    message_type: str = ""


@dataclass(frozen=True)
class AssistantMessage(LettaChunk):
    content: str
    message_type = "assistant_message"


@dataclass(frozen=True)
class ReasoningMessage(LettaChunk):
    reasoning: str
    message_type = "reasoning_message"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str
    tool_call_id: str


@dataclass(frozen=True)
class ToolCallMessage(LettaChunk):
    tool_call: ToolCall
    message_type = "tool_call_message"


@dataclass(frozen=True)
class ApprovalRequestMessage(LettaChunk):
    tool_call: ToolCall
    message_type = "approval_request_message"


@dataclass(frozen=True)
class ToolReturnMessage(LettaChunk):
    tool_return: str
    status: str
    tool_call_id: str
    name: str
    message_type = "tool_return_message"


@dataclass(frozen=True)
class LettaStopReason(LettaChunk):
    stop_reason: str
    message_type = "stop_reason"


@dataclass(frozen=True)
class LettaUsageStatistics(LettaChunk):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    step_count: int
    message_type = "usage_statistics"


class LettaChunks:
    """Turns letta_nb's events into letta_client's chunks, one stream at a time (it counts the steps)."""

    def __init__(self) -> None:
        self.steps = 0

    def __call__(self, event: StreamEvent) -> Iterator[LettaChunk]:
        if isinstance(event, AssistantDelta):
            yield AssistantMessage(event.text)
        elif isinstance(event, ReasoningDelta):
            yield ReasoningMessage(event.text)
        elif isinstance(event, ToolCallEvent):
            yield ToolCallMessage(ToolCall(event.name, event.arguments, event.call_id))
        elif isinstance(event, ApprovalRequestEvent):
            yield ApprovalRequestMessage(ToolCall(event.name, event.arguments, event.call_id))
        elif isinstance(event, ToolReturnEvent):
            yield ToolReturnMessage(event.content, event.status, event.call_id, event.name)
        elif isinstance(event, StepEvent):
            self.steps += 1
        elif isinstance(event, StopEvent):
            yield LettaStopReason(event.stop_reason)
            usage: Any = event.usage
            prompt, completion = getattr(usage, "prompt_tokens", 0), getattr(usage, "completion_tokens", 0)
            yield LettaUsageStatistics(completion, prompt, prompt + completion, self.steps)
