"""Letta's base tools, with Letta's names, arguments and semantics.

They receive the step's :class:`ToolContext` as the injected ``agent_state`` argument (the same
injection user tools may ask for) and are ``async`` so they run on the runtime loop, not in a thread.
Memory edits go to the step's working memory and archival inserts to its pending passages; the step
writer commits both with the step's messages, so a failed or killed step changes nothing. A raised
error becomes the tool's error result, which the model reads and can correct.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.memory import WorkingMemory
from letta_nb.runtime.tool_schema import ToolSpec, tool_from_function

if TYPE_CHECKING:
    from letta_nb.runtime.archival import Archival
    from letta_nb.schemas import AgentState
    from letta_nb.store.records import PassageRecord
    from letta_nb.store.store import Store

__all__ = ["ToolContext", "BASE_TOOLS", "BASE_TOOL_NAMES", "TERMINAL_TOOLS"]


@dataclass
class ToolContext:
    """What a tool can see of its agent during one step."""

    agent: AgentState
    memory: WorkingMemory
    store: Store
    archival: Archival
    pending_passages: list[PassageRecord] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.agent.id

    @property
    def name(self) -> str:
        return self.agent.name


async def send_message(message: str, agent_state: ToolContext) -> None:
    """Sends a message to the human user. This ends your turn.

    Args:
        message: Message contents. All unicode (including emojis) are supported.
    """
    if not isinstance(message, str) or not message.strip():
        raise InvalidArgumentError("message must be a non-empty string")
    return None


async def conversation_search(
    query: str,
    agent_state: ToolContext,
    roles: list[Literal["user", "assistant", "tool", "system"]] | None = None,
    limit: int = 5,
    start_date: str | None = None,
    end_date: str | None = None,
    search_mode: Literal["hybrid", "vector", "text"] = "hybrid",
) -> str:
    """Search prior conversation history (recall memory) by words and meaning.

    Args:
        query: What to look for.
        roles: Only these roles (default: user, assistant).
        limit: Maximum number of messages to return.
        start_date: ISO-8601, inclusive.
        end_date: ISO-8601, exclusive.
        search_mode: Default hybrid.
    """
    found = await agent_state.archival.search_messages(
        agent_state.agent, query, limit=max(1, min(int(limit), 50)), roles=roles, start_datetime=start_date,
        end_datetime=end_date, search_mode=search_mode,
    )
    results = [
        {"role": m.role, "content": m.text, "timestamp": m.created_at.isoformat(timespec="seconds")}
        for m in found
        if m.text
    ]
    return json.dumps(results, ensure_ascii=False)


async def archival_memory_insert(content: str, agent_state: ToolContext, tags: list[str] | None = None) -> None:
    """Add a passage to archival memory: long-term storage searched with archival_memory_search.

    Args:
        content: Content to write to the memory.
        tags: Optional tags to file the passage under.
    """
    if not content.strip():
        raise InvalidArgumentError("content must not be empty")
    passage = await agent_state.archival.embed_passage(agent_state.agent, content, tags or [])
    agent_state.pending_passages.append(passage)
    return None


async def archival_memory_search(
    query: str,
    agent_state: ToolContext,
    tags: list[str] | None = None,
    tag_match_mode: Literal["any", "all"] = "any",
    top_k: int = 5,
    start_datetime: str | None = None,
    end_datetime: str | None = None,
    search_mode: Literal["hybrid", "vector", "text"] = "hybrid",
) -> str:
    """Search archival memory by words and meaning.

    Args:
        query: What to look for.
        tags: Only passages with these tags.
        tag_match_mode: "any" (at least one tag) or "all" (every tag).
        top_k: How many results to return.
        start_datetime: Only passages created at or after this ISO-8601 time (e.g. "2024-05-01T00:00:00Z").
        end_datetime: Only passages created before this ISO-8601 time.
        search_mode: Default hybrid.
    """
    hits = await agent_state.archival.search(
        agent_state.agent, query, top_k=top_k, tags=tags, tag_match_mode=tag_match_mode,
        start_datetime=start_datetime, end_datetime=end_datetime, search_mode=search_mode,
    )
    return json.dumps(
        [{"text": p.text, "tags": list(p.tags), "timestamp": p.created_at.isoformat(timespec="seconds"),
          "score": round(p.score or 0.0, 4)} for p in hits],
        ensure_ascii=False,
    )


async def core_memory_append(label: str, content: str, agent_state: ToolContext) -> None:
    """Append to the contents of a core memory block.

    Args:
        label: Section of the memory to be edited (e.g. "human" or "persona").
        content: Content to write to the memory.
    """
    agent_state.memory.append(label, content)


async def core_memory_replace(label: str, old_content: str, new_content: str, agent_state: ToolContext) -> None:
    """Replace the contents of a core memory block. To delete memories, use an empty string for new_content.

    Args:
        label: Section of the memory to be edited.
        old_content: String to replace. Must be an exact match.
        new_content: Content to write to the memory.
    """
    agent_state.memory.replace_text(label, old_content, new_content)


async def memory_insert(label: str, new_str: str, agent_state: ToolContext, insert_line: int = -1) -> None:
    """Insert text at a line of a memory block.

    Args:
        label: Label of the block to edit.
        new_str: The text to insert.
        insert_line: Line number after which to insert (0 is the beginning, -1 the end).
    """
    agent_state.memory.insert(label, new_str, insert_line)


async def memory_replace(label: str, old_str: str, new_str: str, agent_state: ToolContext) -> None:
    """Replace a unique, exact occurrence of text in a memory block.

    Args:
        label: Label of the block to edit.
        old_str: The text to replace; it must appear exactly once.
        new_str: The new text (empty to delete).
    """
    agent_state.memory.replace_unique(label, old_str, new_str)


async def memory_rethink(label: str, new_memory: str, agent_state: ToolContext) -> None:
    """Rewrite a whole memory block, e.g. to reorganise it.

    Args:
        label: Label of the block to rewrite (created edits are not allowed; it must exist).
        new_memory: The complete new contents of the block.
    """
    agent_state.memory.rethink(label, new_memory)


BASE_TOOLS: dict[str, ToolSpec] = {
    f.__name__: tool_from_function(f, timeout=60.0)
    for f in (
        send_message,
        conversation_search,
        archival_memory_insert,
        archival_memory_search,
        core_memory_append,
        core_memory_replace,
        memory_insert,
        memory_replace,
        memory_rethink,
    )
}
BASE_TOOL_NAMES = tuple(BASE_TOOLS)
TERMINAL_TOOLS = frozenset({"send_message"})
