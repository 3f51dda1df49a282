"""Token estimates for context-window budgeting.

The budget only needs to be conservative and cheap (it runs on every step), so it uses the common
~4 characters per token rule plus a per-message overhead, as OpenAI's cookbook counts chat messages.
Backends that know their tokenizer may count exactly; the agent loop only needs an upper-ish bound.
"""

from __future__ import annotations

import json
from typing import Any

from letta_nb.llm.images import content_tokens

__all__ = ["estimate_tokens", "message_tokens", "MESSAGE_OVERHEAD_TOKENS", "Prompt"]

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str | None) -> int:
    if not text:
        return 0
    return (len(text) + 3) // 4


def message_tokens(message: dict[str, Any]) -> int:
    """Estimated tokens of one OpenAI chat message, tool calls included."""
    n = MESSAGE_OVERHEAD_TOKENS + content_tokens(message.get("content"))  # an image: a fixed IMAGE_TOKENS
    for call in message.get("tool_calls") or ():
        fn = call["function"]
        n += estimate_tokens(fn["name"]) + estimate_tokens(fn["arguments"]) + 3
    return n


def tools_tokens(tools: list[dict[str, Any]]) -> int:
    return estimate_tokens(json.dumps(tools)) if tools else 0


class Prompt(list[dict[str, Any]]):
    """The chat messages of one model call, with the runtime's estimate of their tokens (system prompt, tool
    schemas, window and the step's messages, kept as running totals by runtime/session.py).

    Why: a backend that reports usage itself (the offline model) would otherwise rescan the whole window on
    every call, a cost that grows with the conversation; it reads ``tokens`` instead, and scans only a plain
    list. It is a list in every other respect (JSON, the OpenAI SDK, slicing).

    ``tokens`` None: no estimate (the backend counts). ``watched`` is False when nobody reads the stream's
    deltas (the agent loop sets it for a turn without a stream consumer, :func:`~letta_nb.llm.base.complete`
    always): a backend that only simulates streaming (the offline model) may then send the
    :class:`~letta_nb.llm.base.Completion` alone, as long as nothing would pace the deltas; a real endpoint
    ignores it. A plain list is taken as watched."""

    __slots__ = ("tokens", "watched")

    def __init__(self, messages: list[dict[str, Any]], tokens: int | None, *, watched: bool = True):
        super().__init__(messages)
        self.tokens = tokens
        self.watched = watched
