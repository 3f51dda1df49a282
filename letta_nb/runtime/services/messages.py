"""Recall memory from the API, and stopping a running turn.

A turn itself is :func:`letta_nb.runtime.agent_loop.run_turn` (it takes the agent's lock and lease and
resolves the agent in arrival order); this module only reads what turns stored, and cancels one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from letta_nb.runtime.services.lookup import agent_id
from letta_nb.schemas import Message

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["cancel", "recall"]


async def recall(rt: Runtime, agent: Any, *, limit: int | None = None) -> list[Message]:
    """The agent's messages, oldest first; only the newest ``limit`` when given."""
    found = await agent_id(rt, agent)
    if limit is not None:
        return list(reversed(await rt.store.load_messages(found, limit=limit, newest_first=True)))
    return await rt.store.load_messages(found)


async def cancel(rt: Runtime, agent: Any) -> bool:
    """Cancel the agent's running turn (its partial reply is kept); False if none was running."""
    return rt.cancel_turn(await agent_id(rt, agent))
