"""Stream events: what ``messages.stream`` yields while a turn runs.

Shaped after Letta's streaming chunks (``message_type`` strings) so letta_client users recognise them:
reasoning and assistant text arrive as deltas, a tool call as one event when its arguments are complete,
its result when the tool returns, a step summary after each commit, and one ``stop_reason`` last.

Which text is the reply and which is reasoning is decided in one place, runtime/replies.py: a reply is an
:class:`AssistantDelta` whether it came through ``send_message`` or as the model's plain content;
reasoning (a provider's reasoning field, or a memgpt agent's inner thoughts before a tool call) is a
:class:`ReasoningDelta`, which displays show collapsed or only on request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from letta_nb._text import clean_text
from letta_nb.schemas import StepStats

__all__ = [
    "StreamEvent",
    "ReasoningDelta",
    "AssistantDelta",
    "ToolCallEvent",
    "ToolReturnEvent",
    "ApprovalRequestEvent",
    "StepEvent",
    "StopEvent",
    "SendMessageParser",
]


class StreamEvent:
    message_type: str = ""


@dataclass(frozen=True)
class ReasoningDelta(StreamEvent):
    """A piece of the model's reasoning: not the reply."""

    text: str
    message_type = "reasoning_message"


@dataclass(frozen=True)
class AssistantDelta(StreamEvent):
    """A piece of the reply: the ``message`` of ``send_message`` as it streams, or the model's plain content."""

    text: str
    message_type = "assistant_message"


@dataclass(frozen=True)
class ToolCallEvent(StreamEvent):
    """A complete tool call; ``recovered`` when the model wrote it as JSON text in its content."""

    call_id: str
    name: str
    arguments: str
    recovered: bool = False
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
class ApprovalRequestEvent(StreamEvent):
    """A tool call that waits for a person's approval (runtime/approvals.py); the turn then stops with
    ``requires_approval``. Answer it with ``client.agents.messages.approve(agent, call_id, approve=...)``."""

    call_id: str
    name: str
    arguments: str
    message_type = "approval_request_message"


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
        self._pos: int | None = None  # next undecoded index of the value in _buf
        self._done = False

    def feed(self, chunk: str) -> str:
        if self._done:
            return ""
        self._buf += chunk
        if self._pos is None:
            k = self._buf.find(self._KEY)
            if k < 0:
                return ""
            after = self._buf[k + len(self._KEY):].lstrip()
            if not after.startswith(":"):
                return ""
            after = after[1:].lstrip()
            if not after.startswith('"'):
                return ""
            self._pos = len(self._buf) - len(after) + 1
        text, self._pos, self._done = _decode_from(self._buf, self._pos)
        return text


_PLAIN = re.compile(r'[^"\\]+')  # a run of characters that need no decoding
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _decode_from(buf: str, i: int) -> tuple[str, int, bool]:
    """Decode a JSON string body from ``buf[i:]`` up to an incomplete escape or the closing quote.

    Returns (text, next index to decode from, reached closing quote). Linear in the new characters.
    """
    out = []
    n = len(buf)
    while i < n:
        m = _PLAIN.match(buf, i)
        j = m.end() if m else i
        out.append(buf[i:j])
        i = j
        if i >= n:
            break
        if buf[i] == '"':
            return "".join(out), i + 1, True
        if i + 1 >= n:  # a lone backslash: wait for the next chunk
            break
        esc = buf[i + 1]
        if esc == "u":
            width = 6
            if buf[i + 2:i + 4].lower() in ("d8", "d9", "da", "db"):  # a high surrogate: is a low one next?
                if i + 8 > n:
                    break
                if buf[i + 6:i + 8] == "\\u":
                    if i + 12 > n:
                        break
                    width = 12 if buf[i + 8:i + 10].lower() in ("dc", "dd", "de", "df") else 6
            if i + width > n:
                break
            try:  # a lone surrogate escape (\ud800) is shown as U+FFFD, as the stored arguments will be
                out.append(clean_text(json.loads(f'"{buf[i:i + width]}"')))
            except ValueError:
                out.append(buf[i:i + width])
            i += width
        else:
            out.append(_ESCAPES.get(esc, esc))
            i += 2
    return "".join(out), i, False
