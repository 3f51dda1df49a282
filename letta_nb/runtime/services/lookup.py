"""Finding an agent: by id, name or AgentState, as the session cache holds it.

Every service reads an agent through here, so "which agent, as of when" is answered in one place: the
session is revalidated against the agent's version row (one indexed read) before it is returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from letta_nb.schemas import AgentState

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["agent_id", "agent_state"]


async def agent_id(rt: Runtime, agent: Any) -> str:
    """The id of the agent named by id, name or AgentState; AgentNotFoundError with suggestions otherwise."""
    return await rt.resolve_agent(agent)


async def agent_state(rt: Runtime, agent: Any) -> AgentState:
    """The agent as its session holds it (reloaded first if another process changed it)."""
    return (await rt.session(await agent_id(rt, agent))).agent
