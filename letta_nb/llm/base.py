"""The model-client protocol: one streaming method per backend.

A backend (the offline model, an OpenAI-compatible endpoint, a scripted test model) implements only
:meth:`LLMClient.stream`, yielding :class:`TextDelta` (message content), :class:`ReasoningTextDelta` (a
provider's separate reasoning field) and :class:`ToolCallDelta` events and finishing with exactly one
:class:`Completion`. Whether content is the reply or inner thoughts is not the backend's call: the agent
loop decides by agent type (runtime/replies.py). :func:`complete` collects a stream for callers that do not care about
tokens. Messages and tools are plain OpenAI chat-completions dicts so every backend speaks the same shape.

Text a backend yields is valid Unicode (:mod:`letta_nb._text`): a remote reply's lone surrogates are
repaired as it is decoded, and :meth:`ToolCall.parsed_arguments` repairs those that JSON escapes decode to.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from letta_nb._text import clean_json, has_surrogates
from letta_nb.llm.tokens import Prompt

__all__ = [
    "ToolCall",
    "Usage",
    "TextDelta",
    "ReasoningTextDelta",
    "ToolCallDelta",
    "Completion",
    "LLMEvent",
    "ToolChoice",
    "LLMClient",
    "complete",
]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as the model emitted it. ``arguments`` is the raw JSON text, possibly malformed.

    ``recovered`` is True when the model wrote the call as JSON in its message content instead of the
    API's ``tool_calls`` (small local models do) and letta_nb recognised it (llm/text_calls.py)."""

    id: str
    name: str
    arguments: str
    recovered: bool = False

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ``ValueError`` with a readable reason when they are not a JSON object."""
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"arguments of {self.name!r} are not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(value, dict):
            raise ValueError(f"arguments of {self.name!r} must be a JSON object, got {type(value).__name__}")
        if "\\u" not in self.arguments and not has_surrogates(self.arguments):
            return value  # no \u escape and valid text: no decoded string can hold a lone surrogate or a NUL
        # a JSON "\ud800" escape decodes to a lone surrogate: repaired here, once
        cleaned: dict[str, Any] = clean_json(value)
        return cleaned

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __iadd__(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        return self


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's message content: the reply, or inner thoughts before a tool call."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningTextDelta:
    """A piece of the model's reasoning sent apart from the content (``reasoning_content`` / ``reasoning``
    deltas of DeepSeek, vLLM, Ollama thinking models, OpenRouter): never the reply."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call. ``index`` identifies the call; id and name arrive on its first delta."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    """The last event of a stream: the whole turn, assembled."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    ttft_ms: float | None = None
    reasoning: str | None = None  # the reasoning field's text, when the provider sent one


LLMEvent = TextDelta | ReasoningTextDelta | ToolCallDelta | Completion
# OpenAI's tool_choice: "auto", "none", "required" or {"type": "function", "function": {"name": ...}}
ToolChoice = str | dict[str, Any] | None


@runtime_checkable
class LLMClient(Protocol):
    """What the agent loop needs from a model.

    ``messages`` are OpenAI chat messages (system/user/assistant/tool dicts); ``tools`` are OpenAI
    function-tool schemas; ``tool_choice`` is OpenAI's (``"required"``, or ``{"type": "function",
    "function": {"name": ...}}`` to force that call; None: the model's choice), passed only when an
    agent's tool rules demand a call (runtime/rule_solver.py), so a backend without rules to honour may
    leave it out of its signature. Implementations must end the stream with one :class:`Completion`.
    """

    name: str
    context_window: int
    supports_parallel_tool_calls: ClassVar[bool]

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
               tool_choice: ToolChoice = None) -> AsyncIterator[LLMEvent]: ...


async def complete(client: LLMClient, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
    """Run a stream to its end and return the final :class:`Completion` (nobody watches its deltas)."""
    messages = Prompt(messages, messages.tokens if isinstance(messages, Prompt) else None, watched=False)
    final: Completion | None = None
    async for event in client.stream(messages, tools):
        if isinstance(event, Completion):
            final = event
    if final is None:
        raise RuntimeError(f"model {client.name!r} ended its stream without a Completion")
    return final
