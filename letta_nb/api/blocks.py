"""Core-memory blocks: an agent's (``client.agents.blocks``) and shared ones (``client.blocks``).

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made). An agent's
block is named by label, in letta_client's shape ``retrieve("human", agent_id=agent.id)`` or letta_nb's
``retrieve(agent, "human")``. A block made with ``client.blocks.create`` (or any agent's block, by its id)
can be attached to several agents: an edit by any of them, or through the API, is seen by all of them on
their next turn, and two agents editing it at once lose neither edit (store/shared_blocks.py).
"""

from __future__ import annotations

from typing import Any

from letta_nb._client_args import (
    agent_and_item,
    agent_ref,
    block_limit,
    block_value,
    flag,
    new_block_label,
    optional_text,
    text_arg,
)
from letta_nb._client_args import (
    block_label as label_arg,  # the methods' parameter `block_label` is letta_client's name
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.api._base import AgentRef, _page, _Resource
from letta_nb.runtime.services import blocks as _blocks
from letta_nb.schemas import DEFAULT_BLOCK_LIMIT, AgentState, Block
from letta_nb.store.ids import new_id
from letta_nb.store.shared_blocks import SharedBlock

__all__ = ["Blocks", "SharedBlocks"]


def _changes(value: Any, limit: Any, description: Any, read_only: Any) -> dict[str, Any]:
    return {"value": None if value is None else block_value(value),
            "limit": None if limit is None else block_limit(limit),
            "description": optional_text(description, "description"),
            "read_only": None if read_only is None else flag(read_only, "read_only")}


class Blocks(_Resource):
    """Core-memory blocks of an agent."""

    async def _list(self, agent_id: AgentRef, *, before: str | None = None, after: str | None = None,
                    limit: int | None = None, order: str | None = None) -> list[Block]:
        """The agent's core-memory blocks, in prompt order (letta_client's cursor pagination by block id)."""
        blocks = await _blocks.list_blocks(self._rt, agent_ref(agent_id))
        return _page(blocks, before=before, after=after, limit=limit, order=order, what="block of this agent")

    async def _retrieve(self, block_label: str | AgentRef | None = None, block: str | None = None, *,
                        agent_id: AgentRef | None = None) -> Block:
        """One block by label: ``retrieve("human", agent_id=agent.id)`` or ``retrieve(agent, "human")``;
        BlockNotFoundError (with the labels it has) otherwise."""
        agent, found = agent_and_item(block_label, block, agent_id, "memory block label", "blocks.retrieve")
        return await _blocks.get(self._rt, agent, label_arg(found))

    async def _update(self, block_label: str | AgentRef | None = None, block: str | None = None, *,
                      agent_id: AgentRef | None = None, value: str | None = None, limit: int | None = None,
                      description: str | None = None, read_only: bool | None = None) -> Block:
        """Change a block (``update("human", agent_id=..., value=...)`` or ``update(agent, "human", value=...)``).
        A value over the limit raises BlockLimitError and changes nothing; a shared block changes for all its
        agents."""
        agent, found = agent_and_item(block_label, block, agent_id, "memory block label", "blocks.update")
        return await _blocks.update(self._rt, agent, label_arg(found),
                                    **_changes(value, limit, description, read_only))

    async def _attach(self, block_id: str, *, agent_id: AgentRef) -> AgentState:
        """Attach a block (from ``client.blocks``, or another agent's block by id) to the agent; the agent after.
        Its label must be free in the agent."""
        return await _blocks.attach(self._rt, agent_ref(agent_id), text_arg(block_id, "block_id"))

    async def _detach(self, block_id: str, *, agent_id: AgentRef) -> AgentState:
        """Take a block from the agent (it stays in ``client.blocks``); the agent after."""
        return await _blocks.detach(self._rt, agent_ref(agent_id), text_arg(block_id, "block_id"))

    list, alist = sync_twin(_list), async_twin(_list)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    update, aupdate = sync_twin(_update), async_twin(_update)
    modify, amodify = update, aupdate  # letta_client spells it "modify"
    attach, aattach = sync_twin(_attach), async_twin(_attach)
    detach, adetach = sync_twin(_detach), async_twin(_detach)


class SharedBlocks(_Resource):
    """Blocks that stand alone and can be attached to several agents (``client.agents.blocks.attach``)."""

    async def _create(self, *, label: str, value: str, limit: int = DEFAULT_BLOCK_LIMIT, description: str = "",
                      read_only: bool = False) -> SharedBlock:
        """A new block, attached to no agent yet."""
        block = Block(label=new_block_label(label), value=block_value(value), limit=block_limit(limit),
                      description=optional_text(description, "description") or "",
                      read_only=flag(read_only, "read_only"), id=new_id("block"))
        return await _blocks.create_shared(self._rt, block)

    async def _list(self, *, label: str | None = None, before: str | None = None, after: str | None = None,
                    limit: int | None = None, order: str | None = None) -> list[SharedBlock]:
        """Shared blocks, oldest first (``label`` to filter; letta_client's cursor pagination). An agent's own
        block is listed once it is attached to a second agent or retrieved by id."""
        found = await _blocks.list_shared(self._rt, None if label is None else label_arg(label))
        return _page(found, before=before, after=after, limit=limit, order=order, what="shared block")

    async def _retrieve(self, block_id: str) -> SharedBlock:
        """The block of that id, with ``agent_ids``: the agents it is attached to."""
        return await _blocks.get_shared(self._rt, text_arg(block_id, "block_id"))

    async def _update(self, block_id: str, *, value: str | None = None, limit: int | None = None,
                      description: str | None = None, read_only: bool | None = None,
                      label: str | None = None) -> SharedBlock:
        """Change the block for every agent it is attached to (their next turn sees it)."""
        changes = _changes(value, limit, description, read_only)
        return await _blocks.update_shared(self._rt, text_arg(block_id, "block_id"), **changes,
                                           label=None if label is None else new_block_label(label))

    async def _delete(self, block_id: str) -> None:
        """Delete the block and take it from every agent it is attached to."""
        await _blocks.delete_shared(self._rt, text_arg(block_id, "block_id"))

    create, acreate = sync_twin(_create), async_twin(_create)
    list, alist = sync_twin(_list), async_twin(_list)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    update, aupdate = sync_twin(_update), async_twin(_update)
    modify, amodify = update, aupdate  # letta_client spells it "modify"
    delete, adelete = sync_twin(_delete), async_twin(_delete)
