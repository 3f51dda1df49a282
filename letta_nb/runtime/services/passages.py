"""Archival memory from the API: insert (one text or many in one commit), list, search, delete.

Every insert and delete is a change of the agent, so it commits under the agent's lease, fenced by its
token (:meth:`Runtime.agent_lease`), like every other change: a process paused past its lease cannot
write into an agent another process has taken. The lease is held only around the commit: embedding (the
slow part) happens before it, so an insert waits for a running turn at most as long as a step commit would.
An insert is the same write as a step's archival insert (the step writer, a group commit), without messages.

Nothing a session caches depends on passages (the session is the agent row, blocks, tools and the context
window's messages), so nothing is invalidated and the agent's version is not bumped; the vector index and
its in-memory copy follow the rows inside the same transaction and are versioned by a per-agent sequence
(store/vector.py). A tool of a running turn that inserts into its own agent joins that turn's lease (it
would otherwise wait for its own turn to end): its commit is fenced by the turn's token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.search import DEFAULT_SEARCH_MODE
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.schemas import Passage
from letta_nb.store.backend import StepWrite

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["create", "delete", "list_passages", "search"]


async def create(rt: Runtime, agent: Any, text: str | list[str], tags: list[str] | None = None,
                 ) -> Passage | list[Passage]:
    """Embed ``text`` (one string, or a list of them: one embedding call, however the embedder splits it)
    with the agent's embedder, then store the passages under the agent's lease in one commit."""
    state = await agent_state(rt, agent)
    texts = [text] if isinstance(text, str) else text
    records = await rt.archival.embed_passages(state, texts, [] if tags is None else tags)
    async with rt.agent_lease(state.id, join_turn=True) as lease:
        await rt.store.submit_step(StepWrite(state.id, passages=records, fence=(lease.token, lease.last_seq)))
    passages = [r.passage() for r in records]
    return passages[0] if isinstance(text, str) else passages


async def list_passages(rt: Runtime, agent: Any) -> list[Passage]:
    state = await agent_state(rt, agent)
    return await rt.store.list_passages(state.id)


async def search(rt: Runtime, agent: Any, query: str, *, top_k: int, tags: list[str] | None, tag_match_mode: str,
                 start_datetime: Any, end_datetime: Any, search_mode: str = DEFAULT_SEARCH_MODE) -> list[Passage]:
    """The agent's ``top_k`` passages best matching ``query`` (``search_mode``: runtime/search.py), filtered by
    tags and creation time."""
    return await rt.archival.search(await agent_state(rt, agent), query, top_k=top_k, tags=tags,
                                    tag_match_mode=tag_match_mode, start_datetime=start_datetime,
                                    end_datetime=end_datetime, search_mode=search_mode)


async def delete(rt: Runtime, agent: Any, passage_id: str) -> None:
    """Remove one passage; InvalidArgumentError if the agent has none of that id."""
    state = await agent_state(rt, agent)
    async with rt.agent_lease(state.id, join_turn=True) as lease:
        deleted = await rt.store.delete_passage(state.id, passage_id, fence=lease.token)
    if not deleted:
        raise InvalidArgumentError(f"agent {state.name!r} has no passage {passage_id!r}")
