"""The data objects the API hands out: agents, blocks, messages, passages, steps, responses.

They are plain dataclasses shaped like letta_client's models (``message_type``, ``AgentState.memory``),
with no I/O, so every layer can use them. Messages are stored the way models read them (OpenAI chat
roles) and *viewed* the Letta way: an assistant turn that calls ``send_message`` is the agent's
``assistant_message``; other calls are ``tool_call_message``; their results ``tool_return_message``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, overload

from letta_nb import _repr
from letta_nb.errors import BlockNotFoundError
from letta_nb.llm.base import ToolCall, Usage
from letta_nb.llm.images import content_parts, placeholder_text
from letta_nb.llm.tokens import message_tokens

__all__ = ["Block", "Message", "AgentState", "Passage", "StepStats", "Response", "Role"]

Role = Literal["system", "user", "assistant", "tool"]
_V = TypeVar("_V")


class _computed_once(Generic[_V]):
    """``functools.cached_property`` without the lock that Python 3.8-3.11 share across every instance.

    The prompt reads ``Message.openai`` for each message of every step, from one thread; that lock
    made it cost 20 us a read under a hundred busy agents. A non-data descriptor: after the first read
    the instance attribute shadows it.
    """

    def __init__(self, fn: Callable[[Any], _V]):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    @overload
    def __get__(self, obj: None, cls: Any = None) -> _computed_once[_V]: ...
    @overload
    def __get__(self, obj: object, cls: Any = None) -> _V: ...
    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value
DEFAULT_BLOCK_LIMIT = 5000


@dataclass
class Block:
    """A core-memory block: always in the agent's context window, edited by memory tools."""

    label: str
    value: str = ""
    limit: int = DEFAULT_BLOCK_LIMIT
    description: str = ""
    read_only: bool = False
    id: str = ""

    @property
    def chars(self) -> int:
        return len(self.value)

    _repr_html_, _repr_markdown_ = _repr.block_html, _repr.block_md


@dataclass(frozen=True)
class Message:
    """One recall-memory message. ``seq`` orders an agent's messages; ``step_id`` groups a step's rows."""

    id: str
    agent_id: str
    seq: int
    role: Role
    content: str | None
    created_at: dt.datetime
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    step_id: str | None = None
    status: str | None = None

    @_computed_once
    def openai(self) -> dict[str, Any]:
        """The message as an OpenAI chat message (computed once: prompts are rebuilt every step)."""
        msg: dict[str, Any] = {"role": self.role, "content": content_parts(self.content)}  # images as parts
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.role == "tool":
            msg["tool_call_id"] = self.tool_call_id
        return msg

    @_computed_once
    def tokens(self) -> int:
        """Estimated tokens of :attr:`openai` (llm/tokens.py), computed once: a step budgets its messages
        before the request (compaction), in the prompt, and again when the window takes them."""
        return message_tokens(self.openai)

    @property
    def message_type(self) -> str:
        if self.role == "user":
            return "user_message"
        if self.role == "system":
            return "system_message"
        if self.role == "tool":
            return "tool_return_message"
        if self.tool_calls:
            if self.tool_calls[0].name == "send_message":
                return "assistant_message"
            return "tool_call_message"
        # Plain content with no call is the reply itself (a model without send_message, or a reply
        # cut short by cancellation).
        return "assistant_message"

    @property
    def text(self) -> str:
        """What a person reads: the sent message for ``send_message``, else content or the call."""
        if self.tool_calls:
            call = self.tool_calls[0]
            if call.name == "send_message":
                try:  # parsed_arguments: a \ud800 escape in the JSON reads as U+FFFD, not a lone surrogate
                    return str(call.parsed_arguments().get("message", ""))
                except ValueError:
                    return call.arguments
            return ", ".join(f"{c.name}({c.arguments})" for c in self.tool_calls)
        return placeholder_text(self.content)  # an image reads as "[image]" (llm/images.py)

    _repr_html_, _repr_markdown_ = _repr.message_html, _repr.message_md


@dataclass
class AgentState:
    """An agent as stored: identity, model/embedding names, system prompt, blocks and tool names."""

    id: str
    name: str
    model: str
    embedding: str
    system: str
    blocks: list[Block]
    tools: list[str]
    max_steps: int
    created_at: dt.datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    context_start_seq: int = 0
    context_summary: str | None = None
    last_seq: int = 0
    version: int = 0  # bumped by every change that is not a step (blocks, tools, settings): see runtime/leases.py
    agent_type: str = "memgpt_agent"  # or "letta_v1_agent": see runtime/tool_rules.py
    tool_rules: list[dict[str, Any]] = field(default_factory=list)  # Letta's JSON shapes (runtime/tool_rules.py)
    tags: list[str] = field(default_factory=list)
    # This user's HMAC of (id, model, embedding) when this user wrote them (runtime/trust.py): decides
    # whether API keys may go to an endpoint the model spec names. Not shown, not compared.
    signature: str | None = field(default=None, repr=False, compare=False)

    @property
    def memory(self) -> dict[str, Block]:
        return {b.label: b for b in self.blocks}

    def block(self, label: str) -> Block:
        for b in self.blocks:
            if b.label == label:
                return b
        raise BlockNotFoundError(label, [b.label for b in self.blocks], hint=f"(agent {self.name!r})")

    _repr_html_, _repr_markdown_ = _repr.agent_html, _repr.agent_md


@dataclass(frozen=True)
class Passage:
    """An archival-memory passage; ``score`` is set on search results (higher is closer)."""

    id: str
    agent_id: str
    text: str
    tags: tuple[str, ...]
    created_at: dt.datetime
    score: float | None = None

    _repr_html_, _repr_markdown_ = _repr.passage_html, _repr.passage_md


@dataclass(frozen=True)
class StepStats:
    """Timings and usage of one agent step (one model call plus its tool calls)."""

    id: str
    step_index: int
    llm_ms: float
    tools_ms: float
    db_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str | None
    tool_names: tuple[str, ...] = ()
    # compaction before this step's request (runtime/compaction.py): the summariser's time and tokens, and
    # why the fixed note stood in for its summary (None: it did not, or nothing was evicted)
    summary_ms: float = 0.0
    summary_tokens: int = 0
    summary_fallback: str | None = None


@dataclass
class Response:
    """What one ``messages.create`` produced: the new messages (user message first), usage and step timings."""

    messages: list[Message]
    usage: Usage
    steps: list[StepStats]
    stop_reason: str
    run_id: str = ""
    #: Tool calls waiting for a person's answer when ``stop_reason`` is ``"requires_approval"``
    #: (``client.agents.messages.approve(agent, call.id, approve=...)``).
    pending_approvals: list[ToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The agent's reply(s) to the user, joined."""
        return "\n".join(m.text for m in self.messages if m.message_type == "assistant_message")

    @property
    def timings(self) -> dict[str, float]:
        return {
            "llm_ms": sum(s.llm_ms for s in self.steps),
            "tools_ms": sum(s.tools_ms for s in self.steps),
            "db_ms": sum(s.db_ms for s in self.steps),
            "total_ms": sum(s.total_ms for s in self.steps),
        }

    _repr_html_, _repr_markdown_ = _repr.response_html, _repr.response_md
