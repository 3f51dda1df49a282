"""Agents: create one, read them, change an agent's settings, delete it.

A change of an existing agent (:func:`update`, :func:`delete`) happens inside
:meth:`Runtime.agent_change`, so it never lands under a running step of this process or another's turn,
the store refuses it if the lease was lost meanwhile, and the cached session is dropped after. An update
computes its new row from the state read under the lease, not from a read made before it: a concurrent
change of the model in another process is not overwritten with a stale value.

Creation is not a change of an existing agent (nobody can hold a lease on an id not yet made): the name
is checked free before any tool is registered and again by the store under its write lock. Model and
embedding specs are resolved before anything is written, so a typo changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime import trust
from letta_nb.runtime.base_tools import BASE_TOOL_NAMES
from letta_nb.runtime.memory import DEFAULT_SYSTEM, DEFAULT_SYSTEM_V1
from letta_nb.runtime.services import blocks as block_rules
from letta_nb.runtime.services import tools as tool_service
from letta_nb.runtime.services.lookup import agent_id, agent_state
from letta_nb.runtime.tool_rules import DEFAULT_AGENT_TYPE
from letta_nb.schemas import AgentState, Block
from letta_nb.store.ids import new_id, utcnow

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["create", "delete", "list_all", "update"]


async def list_all(rt: Runtime) -> list[AgentState]:
    return await rt.store.list_agents()


async def create(rt: Runtime, name: str, *, model: str | None, embedding: str | None, blocks: list[Block],
                 tools: Sequence[Any], system: str | None, max_steps: int, include_base_tools: bool,
                 metadata: dict[str, Any], agent_type: str = DEFAULT_AGENT_TYPE,
                 tool_rules: list[dict[str, Any]] | None = None, tags: list[str] | None = None,
                 block_ids: Sequence[str] = ()) -> AgentState:
    """Store a new agent; ``tools`` are functions (registered here), ToolSpecs or names of stored tools;
    ``block_ids`` shared blocks attached to it once it exists.

    All or nothing: every spec, block and named tool is checked before the first function is registered.
    ``model``/``embedding`` None: the runtime's ``default_model``/``default_embedding`` settings."""
    model = rt.settings.default_model if model is None else model
    embedding = rt.settings.default_embedding if embedding is None else embedding
    rt.llm(model)  # validates the model name before anything is written
    rt.embedder(embedding)
    for block in blocks:
        block_rules.check_fits(block.label, block.value, block.limit)
    await rt.store.ensure_name_free(name)
    await tool_service.check_all(rt, tools)
    v1 = agent_type == "letta_v1_agent"  # replies in its content: send_message is not one of its base tools
    tool_names = [t for t in BASE_TOOL_NAMES if not (v1 and t == "send_message")] if include_base_tools else []
    for tool in tools:
        tool_name = await tool_service.resolve(rt, tool)
        if tool_name not in tool_names:
            tool_names.append(tool_name)
    check_rule_tools(tool_rules or [], tool_names)
    new_agent_id = new_id("agent")
    state = AgentState(
        id=new_agent_id, name=name, model=model, embedding=embedding,
        system=system or (DEFAULT_SYSTEM_V1 if v1 else DEFAULT_SYSTEM),
        blocks=blocks, tools=tool_names, max_steps=max_steps, created_at=utcnow(), metadata=dict(metadata),
        signature=trust.sign("agent", trust.agent_fields(new_agent_id, model, embedding)),
        agent_type=agent_type, tool_rules=list(tool_rules or []), tags=list(tags or []),
    )
    for block_id in block_ids:  # checked first: a missing block or a taken label writes nothing
        found = await block_rules.get_shared(rt, block_id)
        if any(b.label == found.label for b in blocks):
            raise InvalidArgumentError(f"block_ids: block {block_id!r} is labelled {found.label!r}, like one of "
                                       "memory_blocks; an agent has one block of a label.")
    await rt.store.insert_agent(state)
    for block_id in block_ids:
        await block_rules.attach(rt, state.id, block_id)
    return (await rt.session(state.id)).agent


async def update(rt: Runtime, agent: Any, *, name: str | None = None, model: str | None = None,
                 embedding: str | None = None,
                 system: str | None = None, max_steps: int | None = None,
                 metadata: dict[str, Any] | None = None, agent_type: str | None = None,
                 tool_rules: list[dict[str, Any]] | None = None, tags: list[str] | None = None) -> AgentState:
    """Change settings; the agent's model and embedding are re-signed as this user's (runtime/trust.py)."""
    async with rt.agent_change(agent) as (state, token):
        new_model = state.model if model is None else model
        new_embedding = state.embedding if embedding is None else embedding
        rt.llm(new_model)  # both validated before anything is written
        rt.embedder(new_embedding)
        changes: dict[str, Any] = {
            "model": new_model, "embedding": new_embedding,
            "signature": trust.sign("agent", trust.agent_fields(state.id, new_model, new_embedding)),
        }
        if tool_rules is not None:
            check_rule_tools(tool_rules, state.tools)
        if name is not None and name != state.name:
            await rt.store.ensure_name_free(name)  # the store's unique name is the last guard
        for key, value in (("name", name), ("system", system), ("max_steps", max_steps), ("metadata", metadata),
                           ("agent_type", agent_type), ("tool_rules", tool_rules), ("tags", tags)):
            if value is not None:
                changes[key] = value
        await rt.store.update_agent(state.id, token, **changes)
    return await agent_state(rt, state.id)


def check_rule_tools(rules: list[dict[str, Any]], tool_names: Sequence[str]) -> None:
    """A rule must name a tool the agent has (Letta's rule, too): a typo would otherwise never fire."""
    for i, rule in enumerate(rules):
        if rule["tool_name"] not in tool_names:
            raise InvalidArgumentError(
                f"tool_rules[{i}] ({rule['type']}) names tool {rule['tool_name']!r}, which this agent does not have "
                f"(its tools: {', '.join(tool_names) or 'none'}); attach the tool first or fix the name.")


async def delete(rt: Runtime, agent: Any) -> None:
    async with rt.agent_change(await agent_id(rt, agent)) as (state, token):
        await rt.store.delete_agent(state.id, token)
