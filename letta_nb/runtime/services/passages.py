"""Archival memory from the API, a passage at a time: insert, list, search, delete.

Why these changes do not go through :meth:`Runtime.agent_change` (the lease), unlike blocks and tools:
nothing a session caches depends on passages (the session is the agent row, blocks, tools and the context
window's messages), so there is nothing to invalidate; the one thing that follows passages, the vector
index and its in-memory copy, follows the rows inside the store's own write transaction and is versioned
by a per-agent sequence (store/vector.py), which is already the one place that keeps every process exact.
Taking the lease would not be free: measured here, an empty ``agent_change`` (lease rows in, out, and the
session reloaded after) takes ~6 ms at p50 against ~2 ms for a whole ``passages.create`` on the ``hash``
embedder, so every insert would cost ~4x. It would also make an upload wait for a turn (and a turn for an
upload that may take minutes), and turn a tool that files a passage into its own agent's archival memory
into a ``ReentrantTurnError``. An agent deleted meanwhile takes its passages with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.schemas import Passage

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["create", "delete", "list_passages", "search"]


async def create(rt: Runtime, agent: Any, text: str, tags: list[str] | None = None) -> Passage:
    """Embed ``text`` with the agent's embedder and store it."""
    return await rt.archival.insert(await agent_state(rt, agent), text, tags)


async def list_passages(rt: Runtime, agent: Any) -> list[Passage]:
    state = await agent_state(rt, agent)
    return await rt.store.list_passages(state.id)


async def search(rt: Runtime, agent: Any, query: str, *, top_k: int, tags: list[str] | None, tag_match_mode: str,
                 start_datetime: Any, end_datetime: Any) -> list[Passage]:
    """The agent's ``top_k`` passages closest to ``query``, filtered by tags and creation time."""
    return await rt.archival.search(await agent_state(rt, agent), query, top_k=top_k, tags=tags,
                                    tag_match_mode=tag_match_mode, start_datetime=start_datetime,
                                    end_datetime=end_datetime)


async def delete(rt: Runtime, agent: Any, passage_id: str) -> None:
    """Remove one passage; InvalidArgumentError if the agent has none of that id."""
    state = await agent_state(rt, agent)
    if not await rt.store.delete_passage(state.id, passage_id):
        raise InvalidArgumentError(f"agent {state.name!r} has no passage {passage_id!r}")
