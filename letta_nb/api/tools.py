"""Tools: the store's (``client.tools``) and an agent's (``client.agents.tools``).

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from letta_nb._client_args import (
    agent_and_item,
    agent_ref,
    flag,
    function_arg,
    text_arg,
    timeout_arg,
    tool_name_arg,
    tool_ref,
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.api._base import AgentRef, _Resource
from letta_nb.runtime.services import tools as _tools
from letta_nb.runtime.tool_schema import ToolSpec

if TYPE_CHECKING:
    pass

__all__ = ['AgentTools', 'Tools']


class AgentTools(_Resource):
    """Which tools an agent may call."""

    async def _list(self, agent_id: AgentRef) -> list[str]:
        """The names of the tools the agent may call."""
        return await _tools.agent_tools(self._rt, agent_ref(agent_id))

    async def _attach(self, tool_id: Any = None, tool: Callable[..., Any] | ToolSpec | str | None = None, *,
                      agent_id: AgentRef | None = None) -> list[str]:
        """Give the agent a tool: ``attach("lookup_paper", agent_id=agent.id)`` (letta_client; a tool's name or
        id) or ``attach(agent, tool)`` (a function is registered first); the agent's tool names after."""
        agent, found = agent_and_item(tool_id, tool, agent_id, "tool", "tools.attach")
        return await _tools.attach(self._rt, agent, await _tools.name_of(self._rt, found))

    async def _detach(self, tool_id: Any = None, tool: str | None = None, *,
                      agent_id: AgentRef | None = None) -> list[str]:
        """Take a tool (name or id) from the agent: ``detach(tool, agent_id=...)`` or ``detach(agent, tool)``
        (InvalidArgumentError if it does not have it); its tool names after."""
        agent, found = agent_and_item(tool_id, tool, agent_id, "tool", "tools.detach")
        return await _tools.detach(self._rt, agent, await _tools.name_of(self._rt, found))

    list, alist = sync_twin(_list), async_twin(_list)
    attach, aattach = sync_twin(_attach), async_twin(_attach)
    detach, adetach = sync_twin(_detach), async_twin(_detach)


class Tools(_Resource):
    """User tools: plain Python functions whose schema comes from signature and docstring."""

    async def _upsert_from_function(self, func: Callable[..., Any], *, name: str | None = None,
                                    parallel_safe: bool = False, sandbox: bool | str = False,
                                    timeout: float | None = 30.0, network: bool = False,
                                    requires_approval: bool = False) -> ToolSpec:
        """Register ``func`` as a tool (or replace the tool of that name). ``sandbox=True`` runs it in the
        sandbox (isolated where this machine allows: ``letta_nb.runtime.sandbox.capabilities()``),
        ``"strict"`` only where it is isolated; ``network=True`` lets a sandboxed tool use the network;
        ``requires_approval=True``: each call waits for ``client.agents.messages.approve`` (README)."""
        func = function_arg(func)
        name, timeout = tool_name_arg(name), timeout_arg(timeout)
        parallel_safe = flag(parallel_safe, "parallel_safe")
        requires_approval = flag(requires_approval, "requires_approval")
        return await _tools.register(self._rt, func, name=name, parallel_safe=parallel_safe, sandbox=sandbox,
                                     timeout=timeout, network=network, requires_approval=requires_approval)

    async def _create(self, *, source_code: str, parallel_safe: bool = False, sandbox: bool | str = False,
                      timeout: float | None = 30.0, network: bool = False, requires_approval: bool = False,
                      enable_parallel_execution: bool | None = None,
                      default_requires_approval: bool | None = None) -> ToolSpec:
        """Register the last function ``source_code`` defines (letta_client's way; its name, signature and
        docstring make the tool), replacing a tool of that name. The options are ``upsert_from_function``'s;
        ``enable_parallel_execution``/``default_requires_approval`` are letta_client's names of two of them."""
        source_code = text_arg(source_code, "source_code")
        if enable_parallel_execution is not None:
            parallel_safe = enable_parallel_execution
        if default_requires_approval is not None:
            requires_approval = default_requires_approval
        return await _tools.register_source(
            self._rt, source_code, parallel_safe=flag(parallel_safe, "parallel_safe"), sandbox=sandbox,
            timeout=timeout_arg(timeout), network=network,
            requires_approval=flag(requires_approval, "requires_approval"))

    async def _upsert(self, *, source_code: str, parallel_safe: bool = False, sandbox: bool | str = False,
                      timeout: float | None = 30.0, network: bool = False, requires_approval: bool = False,
                      enable_parallel_execution: bool | None = None,
                      default_requires_approval: bool | None = None) -> ToolSpec:
        """letta_client's upsert: ``create`` (a tool of the same name is replaced either way)."""
        return await self._create(source_code=source_code, parallel_safe=parallel_safe, sandbox=sandbox,
                                  timeout=timeout, network=network, requires_approval=requires_approval,
                                  enable_parallel_execution=enable_parallel_execution,
                                  default_requires_approval=default_requires_approval)

    async def _list(self, *, name: str | None = None) -> list[str]:
        """The names of every tool: the base tools and those registered in this store (``name``: that one, if
        it exists)."""
        found = await _tools.names(self._rt)
        return found if name is None else [n for n in found if n == name]

    async def _retrieve(self, tool_id: str) -> ToolSpec:
        """A tool's spec, by name (or letta_client's id): its schema, isolation and ``.source`` (reading it
        never runs it)."""
        return await _tools.spec(self._rt, await _tools.name_of(self._rt, tool_ref(tool_id)))

    async def _delete(self, tool_id: str) -> None:
        """Delete a registered tool (by name or id) and take it from every agent that had it."""
        await _tools.delete(self._rt, tool_ref(tool_id))

    async def _trust(self, name: str) -> ToolSpec:
        """Let a stored tool that you did not register (a shared store, an imported agent) run as stored.

        Such a tool runs only in the strict sandbox, without network, until you re-register it or trust
        it: read its source first (``client.tools.trust`` returns the spec; ``.source`` is the code)."""
        return await _tools.trust(self._rt, tool_ref(name))

    upsert_from_function = sync_twin(_upsert_from_function)
    aupsert_from_function = async_twin(_upsert_from_function)
    list, alist = sync_twin(_list), async_twin(_list)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    trust, atrust = sync_twin(_trust), async_twin(_trust)
    create, acreate = sync_twin(_create), async_twin(_create)
    upsert, aupsert = sync_twin(_upsert), async_twin(_upsert)
    delete, adelete = sync_twin(_delete), async_twin(_delete)
