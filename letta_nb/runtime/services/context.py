"""What fills an agent's context window, and the exact request its next turn would send.

Both read the agent's :class:`~letta_nb.runtime.session.AgentSession`, the object the agent loop builds
every prompt from, so they show what a model receives rather than a re-derivation of it:
:func:`context_window` splits :meth:`AgentSession.prompt_tokens` (the count the loop budgets and evicts by)
into system instructions, core memory, summary note, tool schemas and window messages, so its ``total`` is
that count to the token; :func:`preview` runs the first step's prompt building (eviction, tool rules, the
model client's request body) on a throwaway copy of the session, so nothing is called, written or changed.

Token counts are the runtime's estimate (:mod:`letta_nb.llm.tokens`: ~4 characters a token plus a
per-message overhead), the number that decides eviction; a model's own tokenizer will differ somewhat.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from letta_nb.llm.tokens import estimate_tokens, message_tokens, tools_tokens
from letta_nb.runtime import approvals, compaction
from letta_nb.runtime.memory import render_memory
from letta_nb.runtime.rule_solver import RuleState, offered
from letta_nb.runtime.services.lookup import agent_id
from letta_nb.runtime.session import EVICT_AT, AgentSession
from letta_nb.schemas import Message
from letta_nb.store.ids import utcnow

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["ContextWindow", "context_window", "preview"]

# (field, label, colour) of each part of the window, in prompt order: the frame's rows and the bar's segments.
_PARTS = (
    ("system_tokens", "system prompt", "#bf8700"),
    ("core_memory_tokens", "core memory", "#2da44e"),
    ("summary_tokens", "summary", "#8250df"),
    ("tools_tokens", "tool schemas", "#6e7781"),
    ("messages_tokens", "messages", "#1f6feb"),
)


@dataclass(frozen=True)
class ContextWindow:
    """Tokens of each part of an agent's context window (``client.agents.context(agent)``), against the
    model's window; ``recall_messages`` and ``archival_passages`` count what is stored outside it."""

    agent_id: str
    agent_name: str
    model: str
    context_window: int  # the model's window, in tokens
    system_tokens: int  # the agent's instructions (with the system message's overhead)
    core_memory_tokens: int  # the rendered memory blocks
    summary_tokens: int  # the note on messages that left the window (0 when none did)
    tools_tokens: int  # the JSON schemas of the tools the agent has
    messages_tokens: int  # the messages in the window
    messages_in_window: int
    recall_messages: int  # every message stored (recall memory)
    archival_passages: int  # passages in archival memory

    @property
    def total(self) -> int:
        """The prompt's tokens before the next user message: what the agent loop budgets with."""
        return sum(getattr(self, name) for name, _, _ in _PARTS)

    @property
    def free(self) -> int:
        return self.context_window - self.total

    @property
    def used(self) -> float:
        """The share of the window in use (eviction starts at ``EVICT_AT`` of it)."""
        return self.total / self.context_window if self.context_window else 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One row per part: tokens and share of the window."""
        window = self.context_window or 1
        return [{"part": label, "tokens": getattr(self, name), "share": getattr(self, name) / window}
                for name, label, _ in _PARTS]

    def to_dataframe(self) -> Any:
        """The parts as a DataFrame (part, tokens, share of the window), with the total and the window."""
        import pandas as pd

        frame = pd.DataFrame(self.rows() + [{"part": "total", "tokens": self.total, "share": self.used},
                                            {"part": "window", "tokens": self.context_window, "share": 1.0}])
        return frame.set_index("part")

    def plot(self, ax: Any = None) -> Any:
        """A horizontal stacked bar of the parts against the window (matplotlib, the ``notebook`` extra)."""
        from letta_nb.telemetry.plots import _axes

        fig, ax = _axes(ax, (7.0, 1.8))
        left = 0
        for name, label, colour in _PARTS:
            width = getattr(self, name)
            ax.barh([0], [width], left=[left], color=colour, label=f"{label} ({width:,})")
            left += width
        ax.axvline(EVICT_AT * self.context_window, color="#cf222e", linestyle="--", linewidth=1,
                   label=f"eviction at {EVICT_AT:.0%}")
        ax.set_xlim(0, max(self.context_window, self.total))
        ax.set_yticks([])
        ax.set_xlabel("tokens")
        ax.set_title(f"{self.agent_name}: {self.total:,} of {self.context_window:,} tokens ({self.used:.1%})")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig

    def _repr_html_(self) -> str:
        window = max(self.context_window, self.total, 1)
        bar = "".join(f'<div title="{label}: {getattr(self, name):,}" '
                      f'style="width:{100 * getattr(self, name) / window:.2f}%;background:{colour}"></div>'
                      for name, label, colour in _PARTS)
        legend = " · ".join(f'<span style="color:{colour}">■</span> {label} {getattr(self, name):,}'
                            for name, label, colour in _PARTS)
        return (
            '<div style="font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;max-width:640px">'
            f"<b>{html.escape(self.agent_name)}</b> ({html.escape(self.model)}): {self.total:,} of "
            f"{self.context_window:,} tokens ({self.used:.1%}), {self.messages_in_window} messages in the window, "
            f"{self.recall_messages} in recall, {self.archival_passages} archival passages"
            f'<div style="display:flex;height:14px;border:1px solid #d0d7de;border-radius:3px;margin:4px 0">{bar}</div>'
            f"{legend}</div>"
        )


async def context_window(rt: Runtime, agent: Any) -> ContextWindow:
    """The agent's context window as its next prompt will hold it (before the next user message)."""
    found = await agent_id(rt, agent)
    recall = await rt.store.count_messages(found)
    archival = await rt.store.count_passages(found)
    session = await rt.session(found)
    # From here on no await: the session is read in one piece, never halfway through a step's append.
    system, system_tokens = session.system_message()
    state = session.agent
    core = estimate_tokens("\n\n" + render_memory(state.blocks))
    summary = len(system["content"]) - len(state.system) - len("\n\n" + render_memory(state.blocks))
    summary_tokens = (summary + 3) // 4 if state.context_summary else 0
    return ContextWindow(
        agent_id=found, agent_name=state.name, model=state.model, context_window=session.budget,
        # the instructions take what the other parts leave of the system message's tokens (rounding included)
        system_tokens=system_tokens - core - summary_tokens, core_memory_tokens=core, summary_tokens=summary_tokens,
        tools_tokens=tools_tokens(session.tool_schemas),
        messages_tokens=sum(message_tokens(m.openai) for m in session.messages),
        messages_in_window=len(session.messages),
        recall_messages=recall, archival_passages=archival,
    )


async def preview(rt: Runtime, agent: Any, text: str) -> dict[str, Any]:
    """The request body the first step of a turn with ``text`` would send to the model: the same prompt
    building as the agent loop (eviction, tool rules, the client's body) on a copy of the session."""
    found = await agent_id(rt, agent)
    session = await rt.session(found)
    approvals.refuse_while_waiting(session.agent.name, session.messages)  # such a turn would not start
    view = AgentSession(dataclasses.replace(session.agent), session.llm, session.tools, list(session.messages))
    pending = [Message(id="message-preview", agent_id=found, seq=view.agent.last_seq + 1, role="user",
                       content=text, created_at=utcnow())]
    # summarised as the turn would, and staged on the session for that turn to reuse (runtime/compaction.py)
    await compaction.make_room(rt, view, pending, stage_on=session)
    rules = RuleState.of_turn(view.agent.tool_rules, view.tools, view.messages, pending)
    schemas, choice = offered(view.tool_schemas, rules)  # as the agent loop's step offers them
    messages = view.prompt(pending)
    body = getattr(view.llm, "request_body", None)
    if body is not None:
        sent: dict[str, Any] = body(messages, schemas, choice)
        return sent
    # a backend with no HTTP body (the offline model): the OpenAI-compatible shape of what it is given
    request: dict[str, Any] = {"model": view.llm.name, "messages": messages}
    if schemas:
        request["tools"] = schemas
        if choice is not None:
            request["tool_choice"] = choice
    return request
