"""An agent's loaded state and its context window, kept between turns.

A session is what the ``agent_state`` cache holds: the agent row, its blocks, its tools and the
messages currently in its context window, with running token counts. Steps append to it after their
rows are committed, so a step never re-reads history and step 1000 costs what step 10 does.

Context budget: when the prompt would pass ``EVICT_AT`` of the model's window, the oldest messages
leave the window (never the store) at a user-message boundary, so a tool call is never separated
from its result, until the prompt is under ``EVICT_TO``. A summary note of what left stays in the
prompt, and the cut point and note are saved with the step that made them. The note is today's fallback:
runtime/compaction.py has a model write the summary of what left (and plans the cut with room for it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from letta_nb.llm.base import LLMClient
from letta_nb.llm.tokens import Prompt, estimate_tokens, tools_tokens
from letta_nb.runtime.memory import compile_system_prompt
from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import AgentState, Message

if TYPE_CHECKING:
    from letta_nb.runtime.compaction import Staged

__all__ = ["AgentSession", "Cut", "Eviction", "EVICT_AT", "EVICT_TO"]

EVICT_AT = 0.9
EVICT_TO = 0.5


@dataclass(frozen=True)
class Eviction:
    start_seq: int
    summary: str
    evicted: int
    # how the summary was written (runtime/compaction.py): its model time, its tokens (prompt + completion),
    # why the fixed note stands in for it (None: a model wrote it, or no model was asked), time the step waited
    summary_ms: float = 0.0
    summary_tokens: int = 0
    fallback: str | None = None
    wait_ms: float = 0.0


@dataclass(frozen=True)
class Cut:
    """Where the window would start after an eviction, and the messages that would leave it."""

    start_seq: int
    evicted: list[Message]


@dataclass
class AgentSession:
    agent: AgentState
    llm: LLMClient
    tools: dict[str, ToolSpec]
    messages: list[Message] = field(default_factory=list)  # in the context window, by seq
    _msg_tokens: list[int] = field(default_factory=list)
    _tool_schemas: list[dict[str, Any]] | None = None
    _system_cache: tuple[tuple[str, ...], str, int] | None = None
    # a summary made ahead of the eviction that needs it (runtime/compaction.py), valid while the window's
    # start and summary are the ones it was made from
    staged: Staged | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._openai = [m.openai for m in self.messages]  # the window as the model sees it, kept in step
        self._msg_tokens = [m.tokens for m in self.messages]
        self._window_tokens = sum(self._msg_tokens)  # kept current so budgeting a step is O(1)
        self._tools_tokens = tools_tokens(self.tool_schemas)

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        if self._tool_schemas is None:
            self._tool_schemas = [t.openai_schema() for t in self.tools.values()]
        return self._tool_schemas

    def system_message(self) -> tuple[dict[str, Any], int]:
        """The system prompt (instructions, rendered blocks, summary note) and its tokens, rebuilt only
        when a block value changed or an eviction reset it."""
        key = tuple(b.value for b in self.agent.blocks)
        if self._system_cache is None or self._system_cache[0] != key:
            text = compile_system_prompt(self.agent.system, self.agent.blocks)
            if self.agent.context_summary:
                text += "\n\n<conversation_summary>\n" + self.agent.context_summary + "\n</conversation_summary>"
            self._system_cache = (key, text, estimate_tokens(text) + 4)
        return {"role": "system", "content": self._system_cache[1]}, self._system_cache[2]

    def prompt(self, pending: list[Message]) -> Prompt:
        """The model's messages for a step, carrying their token estimate (O(pending): the window's is kept)."""
        system, tokens = self.system_message()
        return Prompt([system, *self._openai, *[m.openai for m in pending]],
                      tokens + self._tools_tokens + self._window_tokens + sum([m.tokens for m in pending]))

    def prompt_tokens(self, pending: Iterable[Message] = ()) -> int:
        return (
            self.system_message()[1]
            + self._tools_tokens
            + self._window_tokens
            + sum([m.tokens for m in pending])  # Message.tokens: counted once a message
        )

    @property
    def budget(self) -> int:
        return self.llm.context_window

    def append(self, messages: list[Message]) -> None:
        self.messages.extend(messages)
        self._openai.extend([m.openai for m in messages])
        added = [m.tokens for m in messages]
        self._msg_tokens.extend(added)
        self._window_tokens += sum(added)
        if messages:
            self.agent.last_seq = messages[-1].seq

    def plan_eviction(self, pending: Sequence[Message] = ()) -> Eviction | None:
        """Where the window should start so the prompt fits, with the fixed note on what left, or None if it
        already fits."""
        cut = self.plan_cut(pending)
        return None if cut is None else Eviction(cut.start_seq, self._summarise(cut.evicted), len(cut.evicted))

    def plan_cut(self, pending: Sequence[Message] = (), *, reserve: int | None = None) -> Cut | None:
        """The messages to evict so the prompt, with a summary of ``reserve`` tokens in place of today's
        (None: today's size), falls under ``EVICT_TO`` of the window; None if the prompt is under ``EVICT_AT``
        or nothing can leave."""
        total = self.prompt_tokens(pending)
        if total <= EVICT_AT * self.budget:
            return None
        if reserve is not None:
            total += reserve - self.summary_tokens()
        target = EVICT_TO * self.budget
        cut = None
        dropped = 0
        for i, m in enumerate(self.messages):
            if i > 0 and m.role == "user" and total - dropped <= target:
                break
            dropped += self._msg_tokens[i]
            if i + 1 < len(self.messages) and self.messages[i + 1].role == "user":
                cut = i + 1
        if cut is None:
            cut = len(self.messages)  # no user boundary: evict everything in the window
        evicted = self.messages[:cut]
        if not evicted:
            return None
        start_seq = self.messages[cut].seq if cut < len(self.messages) else (
            pending[0].seq if pending else self.agent.last_seq + 1
        )
        return Cut(start_seq, evicted)

    def summary_tokens(self) -> int:
        """Tokens the current summary adds to the system message (its text and its tags)."""
        summary = self.agent.context_summary
        return estimate_tokens("\n\n<conversation_summary>\n" + summary + "\n</conversation_summary>") if summary else 0

    def fixed_tokens(self) -> int:
        """Tokens of the prompt that no eviction changes: instructions, core memory and tool schemas."""
        return self.system_message()[1] - self.summary_tokens() + self._tools_tokens

    def fallback_note(self, evicted: list[Message]) -> str:
        """The fixed note on what left the window (no model): used when the summariser fails."""
        return self._summarise(evicted)

    def _summarise(self, evicted: list[Message]) -> str:
        users = [m.text.strip().replace("\n", " ")[:80] for m in evicted if m.role == "user" and m.text]
        note = (
            f"{len(evicted)} earlier messages (seq {evicted[0].seq}-{evicted[-1].seq}) left the context window; "
            "they remain in recall memory (use conversation_search)."
        )
        if users:
            note += " The user had said: " + "; ".join(f'"{u}"' for u in users[-5:]) + "."
        previous = self.agent.context_summary
        summary = f"{previous}\n{note}" if previous else note
        # The note must never crowd out the window it summarises: at most a tenth of it (~4 chars/token).
        return summary[-max(200, self.budget * 4 // 10):]

    def apply_eviction(self, eviction: Eviction) -> None:
        keep = [i for i, m in enumerate(self.messages) if m.seq >= eviction.start_seq]
        self.messages = [self.messages[i] for i in keep]
        self._openai = [self._openai[i] for i in keep]
        self._msg_tokens = [self._msg_tokens[i] for i in keep]
        self._window_tokens = sum(self._msg_tokens)
        self.agent.context_start_seq = eviction.start_seq
        self.agent.context_summary = eviction.summary
        self._system_cache = None
