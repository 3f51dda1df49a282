"""Recall memory from the API, stopping a running turn, and answering a tool call that waits for approval.

A turn itself is :func:`letta_nb.runtime.agent_loop.run_turn` (it takes the agent's lock and lease and
resolves the agent in arrival order); this module reads what turns stored, cancels one, and starts the turn
that answers waiting calls (runtime/approvals.py says what waits and why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from letta_nb.runtime import compaction
from letta_nb.runtime.agent_loop import run_turn
from letta_nb.runtime.approvals import Answer
from letta_nb.runtime.services.lookup import agent_id, agent_state
from letta_nb.schemas import AgentState, Message, Response

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["approve", "cancel", "compact", "recall", "reset"]

_log = logging.getLogger(__name__)


async def recall(rt: Runtime, agent: Any, *, limit: int | None = None) -> list[Message]:
    """The agent's messages, oldest first; only the newest ``limit`` when given."""
    found = await agent_id(rt, agent)
    if limit is not None:
        return list(reversed(await rt.store.load_messages(found, limit=limit, newest_first=True)))
    return await rt.store.load_messages(found)


async def reset(rt: Runtime, agent: Any) -> AgentState:
    """Empty the agent's context window (letta_client's ``messages.reset``): its next turn starts afresh, with
    its core memory; recall memory keeps every message (seq stays contiguous, conversation_search finds them)."""
    async with rt.agent_change(agent) as (state, token):
        await rt.store.update_agent(state.id, token, context_start_seq=state.last_seq + 1, context_summary=None)
    return await agent_state(rt, state.id)


async def compact(rt: Runtime, agent: Any) -> AgentState:
    """Summarise the agent's window now, whatever its size (runtime/compaction.py): every message but the last
    turn leaves it for the summary. A summariser failure leaves the fixed note and logs why."""
    state, eviction = await compaction.compact(rt, agent)
    if eviction is not None and eviction.fallback:
        _log.warning("compacting agent %r: the summariser failed (%s); the fixed note stands in", state.name,
                     eviction.fallback)
    return state


async def cancel(rt: Runtime, agent: Any) -> bool:
    """Cancel the agent's running turn (its partial reply is kept); False if none was running."""
    return rt.cancel_turn(await agent_id(rt, agent))


async def approve(rt: Runtime, agent: Any, answers: list[Answer],
                  emit: Callable[[Any], None] | None = None) -> Response:
    """Answer calls waiting for approval: approved ones run once, denied ones give the model the reason; the
    turn then goes on. ApprovalError (nothing run) for a call that is unknown or already answered."""
    return await run_turn(rt, agent, "", emit, answers=answers)
