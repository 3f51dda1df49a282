"""Tools from the API: register a function, trust a stored tool, look tools up, and attach or detach
them from an agent.

The registry itself (which spec a name means in this process, its cache, and the check that another
process has not replaced a registration since) is :class:`~letta_nb.runtime.runtime.Runtime`'s
(``register_tool``, ``tool_spec``, ``trust_tool``): the agent loop resolves tools through it too. A
registration is not a change of any agent, so it takes no agent's lease; the store's tools counter tells
every process to reload (``Runtime.session``). Attaching and detaching change an agent, so they go through
:meth:`Runtime.agent_change`: two attaches at once both land.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.runtime.tool_schema import ToolSpec

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["agent_tools", "attach", "check_all", "detach", "names", "register", "resolve", "spec", "trust"]


async def register(rt: Runtime, func: Callable[..., Any] | ToolSpec, **options: Any) -> ToolSpec:
    """Register ``func`` (or replace the tool of its name); a base tool's name is refused."""
    return await rt.register_tool(func, **options)


async def spec(rt: Runtime, name: str) -> ToolSpec:
    return await rt.tool_spec(name)


async def names(rt: Runtime) -> list[str]:
    return await rt.tool_names()


async def trust(rt: Runtime, name: str) -> ToolSpec:
    """Sign a stored tool this user did not register as theirs: it then runs as stored."""
    return await rt.trust_tool(name)


async def check_all(rt: Runtime, tools: Sequence[Any]) -> None:
    """Every named tool exists and every other item is a function or ToolSpec: checked before any is
    registered, so giving an agent its tools is all or nothing."""
    for tool in tools:
        if isinstance(tool, str):
            await rt.tool_spec(tool)
        elif not callable(tool):
            raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")


async def resolve(rt: Runtime, tool: Any) -> str:
    """The name of ``tool``: a function or ToolSpec is registered first, a name must be a known tool."""
    if isinstance(tool, ToolSpec) or callable(tool):
        return (await rt.register_tool(tool)).name
    if isinstance(tool, str):
        return (await rt.tool_spec(tool)).name
    raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")


async def attach(rt: Runtime, agent: Any, tool: Any) -> list[str]:
    """Give the agent ``tool`` (registered first if it is a function); the agent's tools after."""
    name = await resolve(rt, tool)
    async with rt.agent_change(agent) as (state, token):  # two attaches at once: neither is lost
        await rt.store.set_agent_tools(state.id, [*state.tools, name], token)
    return await agent_tools(rt, state.id)


async def detach(rt: Runtime, agent: Any, tool: str) -> list[str]:
    """Take ``tool`` from the agent (InvalidArgumentError if it does not have it); the agent's tools after."""
    async with rt.agent_change(agent) as (state, token):
        if tool not in state.tools:
            raise InvalidArgumentError(f"agent {state.name!r} has no tool {tool!r}; it has {state.tools}")
        await rt.store.set_agent_tools(state.id, [t for t in state.tools if t != tool], token)
    return await agent_tools(rt, state.id)


async def agent_tools(rt: Runtime, agent: Any) -> list[str]:
    """The names of the tools the agent may call."""
    return list((await agent_state(rt, agent)).tools)
