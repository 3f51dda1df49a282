"""Core-memory blocks from outside a turn: read them, change one.

A change is made inside :meth:`Runtime.agent_change` and checked against the block as the store has it
under the lease: a value over the limit (the new one, or the old value under a smaller new limit) raises
:class:`~letta_nb.errors.BlockLimitError` and changes nothing. Inside a turn the agent edits its blocks
through the memory tools instead (runtime/memory.py), committed with the step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from letta_nb.errors import BlockLimitError
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.schemas import Block

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["check_fits", "get", "list_blocks", "update"]


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
    """Change the block's value, limit, description or read-only flag (None keeps it)."""
    async with rt.agent_change(agent) as (state, token):
        block = state.block(label)
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
