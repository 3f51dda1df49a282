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

import ast
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.base_tools import BASE_TOOLS
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.runtime.tool_schema import ToolSpec, function_from_source, tool_from_function

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["LETTA_BUILTINS", "agent_tools", "attach", "check_all", "delete", "detach", "name_of", "names", "register",
           "register_source", "resolve", "spec", "trust"]

# Letta's built-in tools letta_nb cannot run: named in agents.create(tools=[...]) (Letta's quickstart gives
# ``web_search`` and ``run_code``) they become stubs whose call tells the model why (agentfile/_tools.py).
_TEXT = {"type": "string"}
LETTA_BUILTINS: dict[str, dict[str, Any]] = {  # their arguments as Letta declares them, so a call reaches the stub
    "web_search": {"query": _TEXT}, "run_code": {"code": _TEXT, "language": _TEXT}, "fetch_webpage": {"url": _TEXT}}


async def register(rt: Runtime, func: Callable[..., Any] | ToolSpec, *, requires_approval: bool = False,
                   **options: Any) -> ToolSpec:
    """Register ``func`` (or replace the tool of its name); a base tool's name is refused.
    ``requires_approval``: each call waits for a person's yes or no (runtime/approvals.py)."""
    spec = func if isinstance(func, ToolSpec) else tool_from_function(func, **options)
    if requires_approval and not spec.requires_approval:
        spec = dataclasses.replace(spec, requires_approval=True)
    return await rt.register_tool(spec)


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
            await _builtin_stub(rt, tool)
            await rt.tool_spec(tool)
        elif not callable(tool):
            raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")


async def resolve(rt: Runtime, tool: Any) -> str:
    """The name of ``tool``: a function or ToolSpec is registered first, a name must be a known tool."""
    if isinstance(tool, ToolSpec) or callable(tool):
        return (await rt.register_tool(tool)).name
    if isinstance(tool, str):
        await _builtin_stub(rt, tool)
        return (await rt.tool_spec(tool)).name
    raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")


async def _builtin_stub(rt: Runtime, name: str) -> None:
    """Store the stub of a Letta built-in tool named by an agent, once (a tool of that name stays as it is)."""
    if name not in LETTA_BUILTINS or name in await rt.tool_names():
        return
    from letta_nb.agentfile._tools import plan_tool  # the Agent File importer's stubs: one definition of them

    params = {"type": "object", "properties": LETTA_BUILTINS[name], "required": list(LETTA_BUILTINS[name])}
    plan = plan_tool({"name": name, "tool_type": "letta_builtin", "json_schema": {"parameters": params},
                      "description": f"Letta's built-in {name} tool (not available in letta_nb)."}, "tools")
    assert plan.record is not None
    await rt.store.upsert_tool(plan.record)
    rt.tool_cache.invalidate(name)


async def name_of(rt: Runtime, tool: Any) -> Any:
    """A tool named by letta_client's id (``tool-...``) as its name; anything else as it is."""
    if isinstance(tool, str) and tool.startswith("tool-"):
        for row in await rt.store.tool_rows():
            if row.id == tool:
                return row.name
    return tool


async def register_source(rt: Runtime, source_code: str, **options: Any) -> ToolSpec:
    """Register the last function ``source_code`` defines (letta_client's ``tools.create(source_code=...)``).
    The source runs in this process, like a function you define yourself."""
    try:
        tree = ast.parse(source_code)
    except SyntaxError as e:
        raise InvalidArgumentError(f"source_code is not valid Python: {e.msg} (line {e.lineno}).") from None
    defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not defs:
        raise InvalidArgumentError("source_code must define a function (def name(...): ...); its name, signature "
                                   "and docstring become the tool's.")
    func = function_from_source(source_code, defs[-1])
    return await register(rt, func, **options)


async def delete(rt: Runtime, tool: str) -> None:
    """Delete a registered tool (by name or id) and take it from every agent that had it."""
    name = await name_of(rt, tool)
    if name in BASE_TOOLS:
        raise InvalidArgumentError(f"{name!r} is a base tool; detach it from an agent instead "
                                   "(client.agents.tools.detach).")
    await rt.tool_spec(name)  # ToolNotFoundError, with close matches, for a name that is not a tool
    await rt.store.delete_tool(name)
    rt.forget_tool(name)


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
