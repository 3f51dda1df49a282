"""Stream events: what ``messages.stream`` yields while a turn runs.

Shaped after Letta's streaming chunks (``message_type`` strings) so letta_client users recognise them:
reasoning and assistant text arrive as deltas, a tool call as one event when its arguments are complete,
its result when the tool returns, a step summary after each commit, and one ``stop_reason`` last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from letta_nb.schemas import StepStats

__all__ = [
    "StreamEvent",
    "ReasoningDelta",
    "AssistantDelta",
    "ToolCallEvent",
    "ToolReturnEvent",
    "StepEvent",
    "StopEvent",
    "SendMessageParser",
]


class StreamEvent:
    message_type: str = ""


@dataclass(frozen=True)
class ReasoningDelta(StreamEvent):
    text: str
    message_type = "reasoning_message"


@dataclass(frozen=True)
class AssistantDelta(StreamEvent):
    """A piece of the reply the agent is sending with ``send_message``."""

    text: str
    message_type = "assistant_message"


@dataclass(frozen=True)
class ToolCallEvent(StreamEvent):
    call_id: str
    name: str
    arguments: str
    message_type = "tool_call_message"


@dataclass(frozen=True)
class ToolReturnEvent(StreamEvent):
    call_id: str
    name: str
    status: str
    content: str
    duration_ms: float
    message_type = "tool_return_message"


@dataclass(frozen=True)
class StepEvent(StreamEvent):
    step: StepStats
    message_type = "step"


@dataclass(frozen=True)
class StopEvent(StreamEvent):
    stop_reason: str
    usage: Any = None
    message_type = "stop_reason"


class SendMessageParser:
    """Pulls the ``message`` string out of streamed ``send_message`` JSON arguments as they arrive.

    Real APIs stream tool-call arguments a few characters at a time; users want the reply's words, not
    JSON. This decodes the string value of the ``"message"`` key incrementally, escapes included, and
    yields only new text. Arguments in another shape simply yield nothing (the full call still lands).
    """

    _KEY = '"message"'

    def __init__(self) -> None:
        self._buf = ""
        self._start: int | None = None  # index just after the opening quote of the value
        self._emitted = 0
        self._done = False

    def feed(self, chunk: str) -> str:
        if self._done:
            return ""
        self._buf += chunk
        if self._start is None:
            k = self._buf.find(self._KEY)
            if k < 0:
                return ""
            rest = self._buf[k + len(self._KEY):]
            stripped = rest.lstrip()
            if not stripped.startswith(":"):
                return ""
            after = stripped[1:].lstrip()
            if not after.startswith('"'):
                return ""
            self._start = len(self._buf) - len(after) + 1
        raw = self._buf[self._start:]
        text, complete = _decode_prefix(raw)
        if complete:
            self._done = True
        new = text[self._emitted:]
        self._emitted = len(text)
        return new


def _decode_prefix(raw: str) -> tuple[str, bool]:
    """Decode as much of a JSON string body as is unambiguous; (text, reached closing quote)."""
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == '"':
            return "".join(out), True
        if c == "\\":
            if i + 1 >= len(raw):
                break
            if raw[i + 1] == "u":
                if i + 6 > len(raw):
                    break
                try:
                    out.append(json.loads(f'"{raw[i:i + 6]}"'))
                except ValueError:
                    out.append(raw[i:i + 6])
                i += 6
                continue
            out.append(json.loads(f'"{raw[i:i + 2]}"') if raw[i + 1] in '"\\/bfnrt' else raw[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), False
