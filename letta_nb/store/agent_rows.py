"""The rows of agents: agents read with their blocks and tools, recall messages, agent inserts, and the fence
of a change. Plain functions of a SQLAlchemy connection that the store (store.py) runs in its transactions;
apart from it so that store.py reads as the store's operations and this module as the rows behind them.

Invariants: agents are read with their blocks and tools in three queries, however many agents; an agent's
row, blocks and tools are inserted in the caller's transaction once its name is checked free under the write
lock; a change made under a lease bumps the agent's version only while that lease still holds (else
StaleCommitError, and the caller's transaction rolls back).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from letta_nb.errors import AgentNotFoundError, AlreadyExistsError, StaleCommitError
from letta_nb.schemas import AgentState, Block, Message
from letta_nb.store.ids import aware
from letta_nb.store.migrations import METADATA
from letta_nb.store.records import row_to_message
from letta_nb.store.sqlite.leases import HELD

__all__ = ["agent", "agent_names", "agents_where", "ensure_name_free", "fenced", "insert_agent_rows", "messages"]

T = METADATA.tables


# Reads run as plain functions on a sync connection (``AsyncConnection.run_sync``), so a read of several
# queries takes one connection and one transaction, and the functions compose (a session = agent + messages).

def agent_names(conn: sa.Connection) -> dict[str, str]:
    """name -> id of every agent."""
    return {r.name: r.id for r in conn.execute(sa.select(T["agents"].c.name, T["agents"].c.id))}


def agent(conn: sa.Connection, agent_id: str) -> AgentState:
    found = agents_where(conn, T["agents"].c.id == agent_id)
    if not found:
        raise AgentNotFoundError(agent_id, list(agent_names(conn)))
    return found[0]


def agents_where(conn: sa.Connection, where: Any) -> list[AgentState]:
    """Agents matching ``where`` with their blocks and tools: three queries, however many agents."""
    agents, blocks, tools = T["agents"], T["blocks"], T["agent_tools"]
    ids = sa.select(agents.c.id).where(where)
    rows = conn.execute(sa.select(agents).where(where).order_by(agents.c.created_at)).all()
    block_rows = conn.execute(sa.select(blocks).where(blocks.c.agent_id.in_(ids)).order_by(blocks.c.label))
    by_agent: dict[str, list[Block]] = {r.id: [] for r in rows}
    for b in block_rows:
        by_agent[b.agent_id].append(Block(label=b.label, value=b.value, limit=b.char_limit,  # a shared block's
                                          description=b.description, read_only=b.read_only,  # mirror: its id
                                          id=b.shared_id or b.id))  # (store/shared_blocks.py)
    tool_rows = conn.execute(sa.select(tools).where(tools.c.agent_id.in_(ids)).order_by(tools.c.tool_name))
    names: dict[str, list[str]] = {r.id: [] for r in rows}
    for t in tool_rows:
        names[t.agent_id].append(t.tool_name)
    return [
        AgentState(
            id=row.id, name=row.name, model=row.model, embedding=row.embedding, system=row.system,
            blocks=by_agent[row.id], tools=names[row.id], max_steps=row.max_steps,
            created_at=aware(row.created_at), metadata=row.metadata or {},
            context_start_seq=row.context_start_seq, context_summary=row.context_summary, last_seq=row.last_seq,
            signature=row.signature, version=row.version, agent_type=row.agent_type,
            tool_rules=list(row.tool_rules or []), tags=list(row.tags or []),
        )
        for row in rows
    ]


def messages(conn: sa.Connection, agent_id: str, *, start_seq: int = 0, limit: int | None = None,
              newest_first: bool = False) -> list[Message]:
    m = T["messages"]
    q = sa.select(m).where(m.c.agent_id == agent_id, m.c.seq >= start_seq)
    q = q.order_by(m.c.seq.desc() if newest_first else m.c.seq)
    if limit is not None:
        q = q.limit(limit)
    return [row_to_message(r) for r in conn.execute(q)]


async def fenced(conn: Any, agent_id: str, token: int | None, *, bump: bool = True) -> None:
    """In a change's transaction: bump the agent's version (other processes reload it) and, with the
    lease ``token`` the change was made under, refuse it (StaleCommitError, rolled back) if the lease was
    lost meanwhile (runtime/leases.py). ``bump=False``: the fence alone (a change no session caches)."""
    if token is None:
        return
    if not bump:
        if (await conn.execute(sa.text(HELD), {"agent_id": agent_id, "token": token})).first() is None:
            raise StaleCommitError(agent_id)
        return
    result = await conn.execute(
        sa.text("UPDATE agents SET version = version + 1 WHERE id = :id AND "
                "(SELECT token FROM agent_leases WHERE agent_id = :id AND holder IS NOT NULL) = :token"),
        {"id": agent_id, "token": token})
    if result.rowcount != 1:
        raise StaleCommitError(agent_id)


async def insert_agent_rows(conn: Any, agent: AgentState, now: Any) -> None:
    """An agent's row, blocks and tool list, in the caller's transaction (its name checked free under the write
    lock)."""
    await ensure_name_free(conn, agent.name)
    await conn.execute(
        T["agents"].insert().values(
            id=agent.id, name=agent.name, model=agent.model, embedding=agent.embedding, system=agent.system,
            max_steps=agent.max_steps, metadata=agent.metadata, last_seq=agent.last_seq,
            context_start_seq=agent.context_start_seq, context_summary=agent.context_summary,
            created_at=agent.created_at, updated_at=now, signature=agent.signature,
            agent_type=agent.agent_type, tool_rules=agent.tool_rules, tags=agent.tags,
        )
    )
    if agent.blocks:
        await conn.execute(
            T["blocks"].insert(),
            [
                dict(id=b.id, agent_id=agent.id, label=b.label, value=b.value, char_limit=b.limit,
                     description=b.description, read_only=b.read_only, updated_at=now)
                for b in agent.blocks
            ],
        )
    if agent.tools:
        await conn.execute(T["agent_tools"].insert(), [dict(agent_id=agent.id, tool_name=t) for t in agent.tools])


async def ensure_name_free(conn: Any, name: str) -> None:
    exists = await conn.scalar(sa.select(T["agents"].c.id).where(T["agents"].c.name == name))
    if exists:
        raise AlreadyExistsError(f"An agent named {name!r} already exists ({exists}). "
                                 "Pick another name or delete it first.")
