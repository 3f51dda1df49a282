"""Core-memory blocks from outside a turn: read them, change one.

A change is made inside :meth:`Runtime.agent_change` and checked against the block as the store has it
under the lease: a value over the limit (the new one, or the old value under a smaller new limit) raises
:class:`~letta_nb.errors.BlockLimitError` and changes nothing. Inside a turn the agent edits its blocks
through the memory tools instead (runtime/memory.py), committed with the step.

Shared blocks (``client.blocks``, store/shared_blocks.py) are attached to several agents: a change of one
is one write transaction that sets the shared row and every agent's mirror and bumps every attached
agent's version (each process reloads them before their next turn). It takes no agent's lease: a running
turn that edits the same block meanwhile has its step commit refused by the step writer's compare-and-set
and redoes the step on the new value, so neither edit is lost.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from letta_nb.errors import BlockLimitError
from letta_nb.runtime.services.lookup import agent_id, agent_state
from letta_nb.schemas import AgentState, Block
from letta_nb.store import shared_blocks as shared
from letta_nb.store.shared_blocks import SharedBlock

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["attach", "check_fits", "create_shared", "delete_shared", "detach", "get", "get_shared", "list_blocks",
           "list_shared", "update", "update_shared"]


def check_fits(label: str, value: str, limit: int) -> None:
    """The domain rule: a block's value is at most its limit (in characters)."""
    if len(value) > limit:
        raise BlockLimitError(label, len(value), limit)


async def list_blocks(rt: Runtime, agent: Any) -> list[Block]:
    return list((await agent_state(rt, agent)).blocks)


async def get(rt: Runtime, agent: Any, label: str) -> Block:
    return (await agent_state(rt, agent)).block(label)


async def update(rt: Runtime, agent: Any, label: str, *, value: str | None = None, limit: int | None = None,
                 description: str | None = None, read_only: bool | None = None) -> Block:
    """Change the block's value, limit, description or read-only flag (None keeps it); a shared block is
    changed for every agent it is attached to."""
    async with rt.agent_change(agent) as (state, token):
        block = state.block(label)
        shared_id = await rt.store.write_sync(shared.shared_id_of, state.id, label)
        if shared_id is not None:
            await update_shared(rt, shared_id, value=value, limit=limit, description=description,
                                read_only=read_only)
            return await get(rt, state.id, label)
        new_value = block.value if value is None else value
        new_limit = block.limit if limit is None else limit
        check_fits(label, new_value, new_limit)
        changes: dict[str, Any] = {"value": new_value, "char_limit": new_limit}
        if description is not None:
            changes["description"] = description
        if read_only is not None:
            changes["read_only"] = read_only
        await rt.store.update_block(state.id, label, token, **changes)
    return await get(rt, state.id, label)


async def list_shared(rt: Runtime, label: str | None = None) -> list[SharedBlock]:
    return await rt.store.write_sync(shared.list_blocks, label)


async def get_shared(rt: Runtime, block_id: str) -> SharedBlock:
    return await rt.store.write_sync(shared.get, block_id)


async def create_shared(rt: Runtime, block: Block) -> SharedBlock:
    check_fits(block.label, block.value, block.limit)
    return await rt.store.write_sync(shared.create, block)


async def update_shared(rt: Runtime, block_id: str, *, value: str | None = None, limit: int | None = None,
                        description: str | None = None, read_only: bool | None = None,
                        label: str | None = None) -> SharedBlock:
    changes: dict[str, Any] = {k: v for k, v in (("value", value), ("char_limit", limit), ("description", description),
                                 ("read_only", read_only), ("label", label)) if v is not None}
    return await rt.store.write_sync(functools.partial(shared.update, **changes), block_id)


async def delete_shared(rt: Runtime, block_id: str) -> None:
    await rt.store.write_sync(shared.delete, block_id)


async def attach(rt: Runtime, agent: Any, block_id: str) -> AgentState:
    """Attach the block to the agent (an agent's own block, named by its id, becomes shared); the agent after."""
    found = await agent_id(rt, agent)
    await rt.store.write_sync(shared.attach, block_id, found)
    return await agent_state(rt, found)


async def detach(rt: Runtime, agent: Any, block_id: str) -> AgentState:
    """Take the block from the agent (it stays in ``client.blocks``); the agent after."""
    found = await agent_id(rt, agent)
    await rt.store.write_sync(shared.detach, block_id, found)
    return await agent_state(rt, found)
