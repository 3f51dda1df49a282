"""Shared core-memory blocks: one block attached to several agents (Letta's ``client.blocks``).

Why mirrors: every reader of an agent's memory (the session load, both step writers, the Agent File
exporter, users' SQL) reads the ``blocks`` table by ``(agent_id, label)``. A shared block keeps that shape:
its canonical row is in ``shared_blocks`` and each agent it is attached to has a *mirror* row in ``blocks``
whose ``shared_id`` names it. The API shows a mirror under its shared block's id.

Invariants:
- A mirror's value is the shared block's value. An edit of one mirror (a step's memory tool, an API update)
  is carried to the shared row and every other mirror by a trigger in the same transaction, which also bumps
  the ``version`` of every *other* attached agent, so every process reloads them before their next turn.
  The trigger is the one place this happens, whichever writer (SQLite, PostgreSQL, a user's SQL) edits.
- No lost update: a step's memory edit is a compare-and-set against the value the step read
  (``StepWrite.block_bases``, checked by both step writers in the commit's transaction). If another agent
  edited the block meanwhile, the step's edit is rebased (:func:`rebase`) onto the block's new value when it is an
  append or a replace of text found once; otherwise the commit is refused and the turn redoes the step on
  the reloaded block (runtime/agent_loop.py ``recover``). Every attached agent's version is bumped, the
  editor's too, so a rebased value is what its next turn reads.
- The other columns (limit, description, read-only, label) change only through :func:`update`, which sets
  them on the shared row and every mirror in one transaction.
- Deleting an agent drops its mirrors (foreign key); the shared block stays until ``blocks.delete``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from letta_nb.errors import BlockLimitError, InvalidArgumentError
from letta_nb.schemas import Block
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.migrations import METADATA

__all__ = ["DDL", "SharedBlock", "attach", "rebase", "create", "delete", "detach", "get", "list_blocks", "shared_id_of",
           "update"]

T = METADATA.tables

DDL: dict[str, tuple[str, ...]] = {
    # recursive_triggers is off (SQLite's default): the mirrors' UPDATE below does not fire this trigger again.
    "sqlite": (
        """CREATE TRIGGER blocks_share_value AFTER UPDATE OF value ON blocks
           FOR EACH ROW WHEN NEW.shared_id IS NOT NULL AND NEW.value IS NOT OLD.value
           BEGIN
             UPDATE shared_blocks SET value = NEW.value, version = version + 1 WHERE id = NEW.shared_id;
             UPDATE agents SET version = version + 1 WHERE id IN
               (SELECT agent_id FROM blocks WHERE shared_id = NEW.shared_id);
             UPDATE blocks SET value = NEW.value WHERE shared_id = NEW.shared_id AND agent_id <> NEW.agent_id;
           END""",
    ),
    # PostgreSQL fires triggers recursively: the depth guard keeps the mirrors' UPDATE from re-entering.
    "postgresql": (
        """CREATE FUNCTION letta_nb_share_block_value() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF pg_trigger_depth() > 1 THEN RETURN NULL; END IF;
             UPDATE shared_blocks SET value = NEW.value, version = version + 1 WHERE id = NEW.shared_id;
             UPDATE agents SET version = version + 1 WHERE id IN
               (SELECT agent_id FROM blocks WHERE shared_id = NEW.shared_id);
             UPDATE blocks SET value = NEW.value WHERE shared_id = NEW.shared_id AND agent_id <> NEW.agent_id;
             RETURN NULL;
           END $$""",
        """CREATE TRIGGER blocks_share_value AFTER UPDATE OF value ON blocks FOR EACH ROW
           WHEN (NEW.shared_id IS NOT NULL AND NEW.value IS DISTINCT FROM OLD.value)
           EXECUTE FUNCTION letta_nb_share_block_value()""",
    ),
}


@dataclass
class SharedBlock(Block):
    """A block as ``client.blocks`` shows it: with the ids of the agents it is attached to."""

    agent_ids: list[str] = field(default_factory=list)


def rebase(base: str, new: str, current: str, limit: int) -> str | None:
    """The value a step's edit of a block (``base`` -> ``new``) gives when the block meanwhile became ``current``
    (another agent's edit): ``new`` if nothing changed; the edit re-applied to ``current`` if it is an append
    to a non-empty block or a replace of text that ``current`` holds exactly once; None (a conflict: the step is
    redone on ``current``) otherwise, or if the result would pass ``limit``."""
    if current == base:
        return new
    p = 0
    while p < min(len(base), len(new)) and base[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(base), len(new)) - p and base[len(base) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    old_part, new_part = base[p:len(base) - s], new[p:len(new) - s]
    if not old_part and s == 0 and base:  # an append (core_memory_append, memory_insert at the end)
        value: str | None = current + new_part
    elif old_part and current.count(old_part) == 1:  # a replace of text still there once
        value = current.replace(old_part, new_part)
    else:
        value = None
    return value if value is not None and len(value) <= limit else None


def _shared(row: Any, agent_ids: list[str]) -> SharedBlock:
    return SharedBlock(label=row.label, value=row.value, limit=row.char_limit, description=row.description,
                       read_only=row.read_only, id=row.id, agent_ids=agent_ids)


def _attached(conn: sa.Connection, block_id: str) -> list[str]:
    b = T["blocks"]
    return list(conn.execute(sa.select(b.c.agent_id).where(b.c.shared_id == block_id).order_by(b.c.agent_id))
                .scalars())


def _promote(conn: sa.Connection, block_id: str) -> None:
    """An agent's own block named by id becomes shared (its row the first mirror), so it can be attached to
    others: Letta's blocks are all standalone, and ``agents.blocks.attach`` takes any block's id."""
    b, s = T["blocks"], T["shared_blocks"]
    own = conn.execute(sa.select(b).where(b.c.id == block_id, b.c.shared_id.is_(None))).first()
    if own is None:
        return
    conn.execute(s.insert().values(id=own.id, label=own.label, value=own.value, char_limit=own.char_limit,
                                   description=own.description, read_only=own.read_only, version=0,
                                   created_at=utcnow(), updated_at=utcnow()))
    conn.execute(b.update().where(b.c.id == block_id).values(shared_id=block_id))


def get(conn: sa.Connection, block_id: str) -> SharedBlock:
    """The block of that id (an agent's own block is promoted first: any block id names a block)."""
    _promote(conn, block_id)
    s = T["shared_blocks"]
    row = conn.execute(sa.select(s).where(s.c.id == block_id)).first()
    if row is None:
        raise InvalidArgumentError(f"block_id {block_id!r} names no block; client.blocks.list() shows them.")
    return _shared(row, _attached(conn, block_id))


def list_blocks(conn: sa.Connection, label: str | None = None) -> list[SharedBlock]:
    """Shared blocks (created with ``client.blocks.create`` or attached to a second agent), oldest first."""
    s, b = T["shared_blocks"], T["blocks"]
    q = sa.select(s).order_by(s.c.created_at, s.c.id)
    if label is not None:
        q = q.where(s.c.label == label)
    rows = conn.execute(q).all()
    agents: dict[str, list[str]] = {r.id: [] for r in rows}
    for shared_id, agent_id in conn.execute(sa.select(b.c.shared_id, b.c.agent_id)
                                            .where(b.c.shared_id.is_not(None)).order_by(b.c.agent_id)):
        agents.setdefault(shared_id, []).append(agent_id)
    return [_shared(r, agents[r.id]) for r in rows]


def create(conn: sa.Connection, block: Block) -> SharedBlock:
    now = utcnow()
    block_id = block.id or new_id("block")
    conn.execute(T["shared_blocks"].insert().values(
        id=block_id, label=block.label, value=block.value, char_limit=block.limit, description=block.description,
        read_only=block.read_only, version=0, created_at=now, updated_at=now))
    return get(conn, block_id)


def update(conn: sa.Connection, block_id: str, **values: Any) -> SharedBlock:
    """Set columns (``value``, ``char_limit``, ``description``, ``read_only``, ``label``) on the shared row
    and every mirror; every attached agent's version is bumped (the trigger bumps the others' on a value
    change; this bumps them all, the one whose mirror carried the value included)."""
    s, b = T["shared_blocks"], T["blocks"]
    found = get(conn, block_id)
    value, limit = values.get("value", found.value), values.get("char_limit", found.limit)
    if len(value) > limit:
        raise BlockLimitError(found.label, len(value), limit)
    if "label" in values and values["label"] != found.label and found.agent_ids:
        clash = conn.execute(sa.select(b.c.agent_id).where(b.c.agent_id.in_(found.agent_ids),
                                                           b.c.label == values["label"])).first()
        if clash is not None:
            raise InvalidArgumentError(f"label {values['label']!r}: agent {clash.agent_id} already has a block "
                                       "labelled so; pick another label or detach one of them first.")
    conn.execute(s.update().where(s.c.id == block_id).values(updated_at=utcnow(), version=s.c.version + 1, **values))
    if found.agent_ids:
        conn.execute(b.update().where(b.c.shared_id == block_id).values(updated_at=utcnow(), **values))
        _bump(conn, found.agent_ids)
    return get(conn, block_id)


def delete(conn: sa.Connection, block_id: str) -> list[str]:
    """Delete the block and its mirrors; the ids of the agents that had it (their versions bumped)."""
    found = get(conn, block_id)
    conn.execute(T["blocks"].delete().where(T["blocks"].c.shared_id == block_id))
    conn.execute(T["shared_blocks"].delete().where(T["shared_blocks"].c.id == block_id))
    _bump(conn, found.agent_ids)
    return found.agent_ids


def attach(conn: sa.Connection, block_id: str, agent_id: str) -> SharedBlock:
    """Give the agent a mirror of the block (no-op if it has one); its label must be free in that agent."""
    found = get(conn, block_id)
    if agent_id in found.agent_ids:
        return found
    b = T["blocks"]
    if conn.execute(sa.select(b.c.id).where(b.c.agent_id == agent_id, b.c.label == found.label)).first():
        raise InvalidArgumentError(f"block {block_id!r}: the agent already has a block labelled {found.label!r}; "
                                   "detach that one first (client.agents.blocks.detach) or rename one of them.")
    conn.execute(b.insert().values(id=new_id("block"), agent_id=agent_id, shared_id=block_id, label=found.label,
                                   value=found.value, char_limit=found.limit, description=found.description,
                                   read_only=found.read_only, updated_at=utcnow()))
    _bump(conn, [agent_id])
    return get(conn, block_id)


def detach(conn: sa.Connection, block_id: str, agent_id: str) -> SharedBlock:
    """Take the block from the agent (it stays, shared with the others, for ``blocks.attach`` again)."""
    found = get(conn, block_id)
    if agent_id not in found.agent_ids:
        raise InvalidArgumentError(f"block_id {block_id!r} is not attached to agent {agent_id}; its agents: "
                                   f"{found.agent_ids}.")
    b = T["blocks"]
    conn.execute(b.delete().where(b.c.agent_id == agent_id, b.c.shared_id == block_id))
    _bump(conn, [agent_id])
    return get(conn, block_id)


def shared_id_of(conn: sa.Connection, agent_id: str, label: str) -> str | None:
    """The shared block an agent's block of that label mirrors, or None (its own block)."""
    b = T["blocks"]
    found: str | None = conn.scalar(sa.select(b.c.shared_id).where(b.c.agent_id == agent_id, b.c.label == label))
    return found


def _bump(conn: sa.Connection, agent_ids: list[str]) -> None:
    if agent_ids:
        a = T["agents"]
        conn.execute(a.update().where(a.c.id.in_(agent_ids)).values(version=a.c.version + 1))
