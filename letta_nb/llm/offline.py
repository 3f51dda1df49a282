"""The built-in ``offline`` model: a deterministic, tool-calling, streaming backend that needs no API key.

It exists so that notebooks, tests and benchmarks run anywhere; benchmarks use it to measure the runtime,
not the model. It is a backend like any other: it implements :meth:`OfflineModel.stream` of the
:class:`~letta_nb.llm.base.LLMClient` protocol and nothing else. The decisions (store a stated fact,
answer a question from core memory or search for it, confirm or retry a memory write, ``/call`` test
hooks) live in :mod:`letta_nb.llm._offline_rules`; this module turns a decision into events shaped like a
real API's stream.

It answers in the ways real models do, so every path of the agent loop is tested without a key
(``offline?reply=content&calls=tagged&reasoning=field``): ``reply=auto`` (send_message when offered, else
plain content) or ``content`` (always plain content, like small local models that ignore send_message);
``calls=api`` (the API's ``tool_calls``) or ``json`` / ``fenced`` / ``tagged`` (one call written as JSON
text in the content, bare, in a ```` ```json ```` fence or in ``<tool_call>`` tags; a step with several
calls still uses the API); ``reasoning=content`` (a sentence of content before tool calls), ``field``
(reasoning deltas apart from the content, like a thinking model) or ``none``.

Invariants: the same ``messages`` and ``tools`` always produce the same events (tool-call ids are hashes
of the position, not random); the stream is reasoning tokens, then content tokens, then each tool call as a
first :class:`ToolCallDelta` carrying index, id and name followed by small argument pieces, then exactly
one :class:`Completion` whose content, reasoning and calls are the concatenation of the deltas. When the
prompt says nobody watches (``Prompt.watched`` False, set by the agent loop for a turn without a stream
consumer) and no ``tps`` paces the tokens, the stream is the Completion alone: the same turn, no deltas.
Latency is simulated only when asked for (``latency_ms`` before the first event, ``1/tps`` per token,
slept in batches of at least 5 ms); with neither, the stream never awaits, so a step costs microseconds.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import operator
import re
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from letta_nb.errors import InvalidArgumentError
from letta_nb.llm._offline_rules import decide
from letta_nb.llm.base import (
    Completion,
    LLMEvent,
    ReasoningTextDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from letta_nb.llm.registry import choice, integer, number, parse_options, redact_spec
from letta_nb.llm.tokens import MESSAGE_OVERHEAD_TOKENS, Prompt, estimate_tokens

__all__ = ["OfflineModel"]

REPLY_MODES = ("auto", "content")
CALL_MODES = ("api", "json", "fenced", "tagged")
REASONING_MODES = ("content", "field", "none")
_TOKEN = re.compile(r"(?:\S+\s*){1,3}|\s+")  # about three words a chunk
_ARG_CHUNK = 24  # characters per streamed argument piece, a few tokens, like real APIs
_MIN_SLEEP_S = 0.005  # batch simulated token time so a fast tps does not create thousands of timers
# Spec options and their bounds (the grammar is letta_nb.llm.registry's): an hour of latency is already far
# past any test or demo, and a context window of ten million tokens past any model.
_OPTIONS = {"latency_ms": number(0, 3_600_000), "tps": number(0, 10_000_000, above_lo=True),
            "context_window": integer(1, 10_000_000), "reply": choice(*REPLY_MODES),
            "calls": choice(*CALL_MODES), "reasoning": choice(*REASONING_MODES)}


def _check_number(option: str, value: float, *, positive: bool) -> None:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidArgumentError(
            f"offline model option {option}={value!r} is invalid: expected a finite number {bound}."
        )


class OfflineModel:
    """The ``offline`` model. Build it directly or from a spec such as ``"offline?latency_ms=50&tps=200"``."""

    name = "offline"
    supports_parallel_tool_calls: ClassVar[bool] = True

    def __init__(self, *, latency_ms: float = 0.0, tps: float | None = None, context_window: int = 16384,
                 reply: str = "auto", calls: str = "api", reasoning: str = "content"):
        _check_number("latency_ms", float(latency_ms), positive=False)
        if tps is not None:
            _check_number("tps", float(tps), positive=True)
        if isinstance(context_window, bool) or not isinstance(context_window, int) or context_window <= 0:
            raise InvalidArgumentError(
                f"offline model option context_window={context_window!r} is invalid: expected an integer > 0."
            )
        for option, value, allowed in (("reply", reply, REPLY_MODES), ("calls", calls, CALL_MODES),
                                       ("reasoning", reasoning, REASONING_MODES)):
            if value not in allowed:
                raise InvalidArgumentError(f"offline model option {option}={value!r} is invalid: expected one of "
                                           + ", ".join(map(repr, allowed)) + ".")
        self.reply, self.calls, self.reasoning = reply, calls, reasoning
        self.latency_ms = float(latency_ms)
        self.tps = None if tps is None else float(tps)
        self.context_window = context_window

    @classmethod
    def from_spec(cls, spec: str) -> OfflineModel:
        """Parse ``offline[?option=value&...]``; options are ``latency_ms``, ``tps``, ``context_window``,
        ``reply``, ``calls`` and ``reasoning``."""
        base, _, query = spec.strip().partition("?")
        if base != "offline":
            raise InvalidArgumentError(
                f"not an offline model spec: {redact_spec(spec)!r}; expected 'offline' or 'offline?latency_ms=50'."
            )
        return cls(**parse_options(spec, query, _OPTIONS, "offline model", key_env=""))

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this model (defaults omitted)."""
        opts = []
        if self.latency_ms:
            opts.append(f"latency_ms={self.latency_ms:g}")
        if self.tps is not None:
            opts.append(f"tps={self.tps:g}")
        if self.context_window != 16384:
            opts.append(f"context_window={self.context_window}")
        for option, default in (("reply", "auto"), ("calls", "api"), ("reasoning", "content")):
            if getattr(self, option) != default:
                opts.append(f"{option}={getattr(self, option)}")
        return "offline" + ("?" + "&".join(opts) if opts else "")

    def __repr__(self) -> str:
        return f"OfflineModel({self.spec!r})"

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                     tool_choice: ToolChoice = None) -> AsyncIterator[LLMEvent]:
        start = time.perf_counter()
        if self.reply == "content":  # a model that ignores send_message: answers in its content
            tools = [t for t in tools if t.get("function", t).get("name") != "send_message"]
        plan = decide(messages, tools, tool_choice)
        n = len(messages)
        calls = tuple(ToolCall(_call_id(n, i, name), name, args) for i, (name, args) in enumerate(plan.calls))
        text, thought, written = self._shape(plan.answer, plan.reasoning, calls)
        if written:
            calls = ()  # the one call is in the content, as JSON text
        if self.latency_ms > 0:
            # asyncio may wake a hair early; loop so ttft_ms >= latency_ms holds exactly.
            while (left := self.latency_ms / 1000 - (time.perf_counter() - start)) > 0:
                await asyncio.sleep(left)
        ttft_ms: float | None = None
        if self.tps is not None or getattr(messages, "watched", True):
            # Otherwise (unwatched, llm/tokens.py Prompt.watched, and unpaced) the deltas would reach no one and
            # nothing could happen between them: the Completion alone says the same, a turn skips ~17 deltas.
            per_token = 1 / self.tps if self.tps else 0.0
            debt = 0.0
            for event in _deltas(text or "", calls, thought or ""):
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - start) * 1000
                yield event
                if per_token:
                    piece = event.arguments if isinstance(event, ToolCallDelta) else event.text
                    debt += per_token * max(1, estimate_tokens(piece))
                    if debt >= _MIN_SLEEP_S:
                        debt = await _sleep_debt(debt)
            if debt > 0:
                await _sleep_debt(debt)
        completion_tokens = estimate_tokens(text or "") + estimate_tokens(thought or "") + sum(
            estimate_tokens(c.name) + estimate_tokens(c.arguments) + 3 for c in calls
        )
        if ttft_ms is None:
            ttft_ms = (time.perf_counter() - start) * 1000
        yield Completion(
            content=text,
            tool_calls=calls,
            # The runtime's running estimate when it sent a Prompt, else content characters / 4 plus per-message
            # overhead, O(messages) in C.
            usage=Usage(_prompt_tokens(messages), completion_tokens),
            finish_reason="tool_calls" if calls else "stop",
            ttft_ms=ttft_ms,
            reasoning=thought,
        )

    def _shape(self, answer: str | None, reasoning: str,
               calls: tuple[ToolCall, ...]) -> tuple[str | None, str | None, bool]:
        """(content, reasoning field, whether the one call is written in the content) in this model's modes."""
        thought = reasoning if self.reasoning == "field" else None
        if answer is not None:
            return answer, thought, False
        if len(calls) == 1 and self.calls != "api":
            return _call_text(calls[0], self.calls), thought, True
        return (reasoning if self.reasoning == "content" else None), thought, False


@functools.lru_cache(maxsize=4096)
def _call_id(n: int, i: int, name: str) -> str:
    """The id of call ``i`` of a reply to ``n`` messages: a hash of the position, so the same prompt gives the
    same ids (kept: a hundred agents at the same length ask for the same few, ~2 us each to hash)."""
    return f"call_{hashlib.sha1(f'{n}:{i}:{name}'.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


_CONTENT = operator.methodcaller("get", "content")
_TOOL_CALLS = operator.methodcaller("get", "tool_calls")


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    if isinstance(messages, Prompt) and messages.tokens is not None:  # the runtime's running estimate
        return messages.tokens  # (llm/tokens.py): no rescan of the window
    # Iterated with map/filter (C loops): the whole prompt is scanned on every call.
    chars = sum(map(len, filter(None, map(_CONTENT, messages))))
    calls = sum(len(c["function"]["arguments"]) for tc in filter(None, map(_TOOL_CALLS, messages)) for c in tc)
    return (chars + calls) // 4 + MESSAGE_OVERHEAD_TOKENS * len(messages)


def _call_text(call: ToolCall, style: str) -> str:
    """A call written as text the way small local models write it: bare JSON, fenced, or in tags."""
    body = f'{{"name": {json.dumps(call.name)}, "arguments": {call.arguments}}}'
    if style == "fenced":
        return f"```json\n{body}\n```"
    if style == "tagged":
        return f"<tool_call>\n{body}\n</tool_call>"
    return body


def _deltas(text: str, calls: tuple[ToolCall, ...],
            thought: str = "") -> list[TextDelta | ReasoningTextDelta | ToolCallDelta]:
    """The stream before the Completion: reasoning tokens, text tokens, then per call a head delta and
    argument pieces."""
    events: list[TextDelta | ReasoningTextDelta | ToolCallDelta] = [
        ReasoningTextDelta(t) for t in _TOKEN.findall(thought)]
    events.extend(TextDelta(t) for t in _TOKEN.findall(text))
    for i, call in enumerate(calls):
        events.append(ToolCallDelta(i, call.id, call.name))
        args = call.arguments
        events.extend(ToolCallDelta(i, arguments=args[j : j + _ARG_CHUNK]) for j in range(0, len(args), _ARG_CHUNK))
    return events


async def _sleep_debt(debt: float) -> float:
    """Sleep off accumulated token time; return what is still owed (negative when the loop overslept)."""
    t0 = time.perf_counter()
    await asyncio.sleep(debt)
    return debt - (time.perf_counter() - t0)
