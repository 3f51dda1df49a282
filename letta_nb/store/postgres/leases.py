"""Lease rows on PostgreSQL: the same tables and rules as store/sqlite/leases.py, on an asyncpg connection.

Each function is a coroutine of an asyncpg connection inside the step writer's transaction (an op of its
group commit) or of its read connection, and satisfies store/backend.py's LeaseRows (awaited).

Where SQLite relied on its global write lock, PostgreSQL takes row locks:
- a grant locks the agent's lease row (``SELECT ... FOR UPDATE``; the row is made on first use, token 0,
  free) and only then reads the agent's ``last_seq``/``version``: a holder's last commit and release are
  wholly visible to the next grant;
- a fenced commit locks the same row (``FOR NO KEY UPDATE``, which its renewal takes anyway) before its
  compare-and-set, so it cannot slip between a new grant and that grant's read of ``last_seq``; a whole
  group's fences are one statement (:func:`fenced_updates`);
- waiters queue in ``lease_waiters`` by ``id``, allocated while the lease row is locked, so in the order the
  acquirers got the lock (their arrival order).
"""

from __future__ import annotations

import time
from typing import Any

from letta_nb.store.backend import Busy, Grant

__all__ = ["acquire", "agent_state", "drop_ticket", "Fence", "FENCE_CTES", "fence_params", "fenced_updates", "install",
           "landed", "peek", "release", "renew"]

_STATE = ("SELECT last_seq, version, coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0) "
          "FROM agents WHERE id = $1")


async def agent_state(cur: Any, agent_id: str) -> tuple[int, int, int] | None:
    """``(last_seq, version, tools_version)``, None if the agent is gone."""
    row = await cur.fetchrow(_STATE, agent_id)
    return None if row is None else (row[0], row[1], row[2])


async def acquire(cur: Any, agent_id: str, holder: str, pid: int, host: str, now: float, ttl: float,
                  ticket_ttl: float) -> Grant | Busy | None:
    """Take the lease if it is free or expired and no older live waiter is queued; else queue (or keep) our
    ticket. ``None``: the agent does not exist."""
    if await agent_state(cur, agent_id) is None:
        await cur.execute("DELETE FROM lease_waiters WHERE agent_id = $1", agent_id)
        return None
    await cur.execute("INSERT INTO agent_leases (agent_id, token) VALUES ($1, 0) ON CONFLICT (agent_id) DO NOTHING",
                      agent_id)
    row = await cur.fetchrow("SELECT token, holder, pid, host, since, expires_at FROM agent_leases "
                             "WHERE agent_id = $1 FOR UPDATE", agent_id)
    agent = await agent_state(cur, agent_id)  # after the lock: the previous holder's commits are visible
    if row is None or agent is None:
        return None
    await cur.execute("DELETE FROM lease_waiters WHERE agent_id = $1 AND expires_at < $2", agent_id, now)
    held = row[1] is not None and row[1] != holder and row[5] >= now
    first = await cur.fetchval("SELECT holder FROM lease_waiters WHERE agent_id = $1 ORDER BY id LIMIT 1", agent_id)
    if held or (first is not None and first != holder):
        mine = await cur.execute("UPDATE lease_waiters SET expires_at = $1 WHERE agent_id = $2 AND holder = $3",
                                 now + ticket_ttl, agent_id, holder)
        if mine == "UPDATE 0":
            await cur.execute("INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES ($1, $2, $3)",
                              agent_id, holder, now + ticket_ttl)
        if held:
            return Busy(row[1], row[2], row[3], row[4], row[5])
        return Busy(None, None, None, None, None)  # free, but an older waiter goes first
    took_expired = row[1] is not None and row[1] != holder
    token = row[0] + 1
    await cur.execute("UPDATE agent_leases SET token = $2, holder = $3, pid = $4, host = $5, since = $6, "
                      "expires_at = $7 WHERE agent_id = $1", agent_id, token, holder, pid, host, now, now + ttl)
    if first is not None:
        await cur.execute("DELETE FROM lease_waiters WHERE agent_id = $1 AND holder = $2", agent_id, holder)
    return Grant(token, agent[0], agent[1], agent[2], took_expired)


async def install(cur: Any, agent_id: str, token: int, holder: str, pid: int, host: str, now: float,
                  ttl: float) -> Grant | int | None:
    """Make a lease granted elsewhere (Redis: runtime/redis_leases.py) the one commits are fenced on: write its
    ``token`` into the agent's lease row if it is above the row's, and read the agent's state after the row
    lock (as :func:`acquire` does). An ``int``: the row's token, which ours is not above (Redis lost its
    counter), nothing written; ``None``: the agent does not exist. ``took_expired``: the row still named
    another holder (it never released: killed, paused, or its Redis key was lost)."""
    if await agent_state(cur, agent_id) is None:
        return None
    await cur.execute("INSERT INTO agent_leases (agent_id, token) VALUES ($1, 0) ON CONFLICT (agent_id) DO NOTHING",
                      agent_id)
    row = await cur.fetchrow("SELECT token, holder FROM agent_leases WHERE agent_id = $1 FOR UPDATE", agent_id)
    agent = await agent_state(cur, agent_id)
    if row is None or agent is None:
        return None
    if row[0] >= token:
        return int(row[0])
    await cur.execute("UPDATE agent_leases SET token = $2, holder = $3, pid = $4, host = $5, since = $6, "
                      "expires_at = $7 WHERE agent_id = $1", agent_id, token, holder, pid, host, now, now + ttl)
    return Grant(token, agent[0], agent[1], agent[2], row[1] is not None and row[1] != holder)


async def renew(cur: Any, agent_id: str, token: int, expires_at: float) -> bool:
    """Extend our lease; False if it is no longer ours."""
    status: str = await cur.execute("UPDATE agent_leases SET expires_at = $1 WHERE agent_id = $2 AND token = $3 "
                                    "AND holder IS NOT NULL", expires_at, agent_id, token)
    return status == "UPDATE 1"


async def release(cur: Any, agent_id: str, token: int) -> bool:
    """Give the lease up (a no-op if it is no longer ours)."""
    status: str = await cur.execute("UPDATE agent_leases SET holder = NULL, expires_at = NULL WHERE agent_id = $1 "
                                    "AND token = $2", agent_id, token)
    return status == "UPDATE 1"


Fence = tuple[str, int, int, int | None, int | None, str | None, float | None]
"""``(agent_id, token, expected last_seq, new last_seq, new context_start_seq, new context_summary, lease
until)`` of :func:`fenced_updates`; a None column is left as it is."""

FENCE_CTES = (
    "WITH w AS (SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[], $6::text[], "
    "$7::float8[]) AS w (agent_id, token, expected, last_seq, context_start_seq, context_summary, until)), "
    "ok AS (UPDATE agents a SET last_seq = coalesce(f.last_seq, a.last_seq), "
    "context_start_seq = coalesce(f.context_start_seq, a.context_start_seq), "
    "context_summary = coalesce(f.context_summary, a.context_summary) "
    "FROM (SELECT w.* FROM w JOIN agent_leases l ON l.agent_id = w.agent_id "
    "WHERE l.token = w.token AND l.holder IS NOT NULL ORDER BY w.agent_id FOR NO KEY UPDATE OF l) f "
    "WHERE a.id = f.agent_id AND a.last_seq = f.expected RETURNING a.id, f.until), "
    "renewed AS (UPDATE agent_leases l SET expires_at = ok.until FROM ok WHERE l.agent_id = ok.id "
    "AND ok.until IS NOT NULL)")
"""The fences of :func:`fenced_updates` as common table expressions (parameters $1 to $7): ``ok`` names the
agents whose update landed. The step writer adds the steps' rows to the same statement (step_writer.py)."""


def landed(now_param: int) -> str:
    """The final ``SELECT`` of a fenced statement: each landed agent and whether a live waiter (its ticket's
    expiry at or after ``$now_param``, as :func:`peek` counts them) was queued for its lease as the statement
    began. The turn's end reads it instead of a peek (runtime/leases.py ``done``): one round trip a turn."""
    return (f" SELECT ok.id, EXISTS (SELECT 1 FROM lease_waiters lw WHERE lw.agent_id = ok.id "
            f"AND lw.expires_at >= ${now_param}) FROM ok")


_FENCED = FENCE_CTES + landed(8)


async def fenced_updates(cur: Any, fences: list[Fence], now: float | None = None) -> dict[str, bool]:
    """The compare-and-set of several agents' step commits in one statement (one round trip for a whole
    group): each agent's row is updated only if our lease still holds (``token``) and ``last_seq`` is what
    the turn read, and then the lease is renewed to ``until`` (None: not renewed). Returns the agents whose
    update landed; the others were refused, nothing written. At most one fence per agent.

    The lease rows are locked first, in ``agent_id`` order (the writer's global lock order; ``FOR NO KEY
    UPDATE``, which the renewal needs anyway): an agent row is locked only once its lease row is, so a grant
    (which locks the lease row, then reads ``last_seq``) and a commit never interleave.

    Each landed agent maps to whether a live waiter (at ``now``, by default the time of the call) was queued
    for its lease (:func:`landed`)."""
    if not fences:
        return {}
    rows = await cur.fetch(_FENCED, *fence_params(fences), time.time() if now is None else now)
    return {r[0]: bool(r[1]) for r in rows}


def fence_params(fences: list[Fence]) -> list[list[Any]]:
    """The parameters $1 to $7 of :data:`FENCE_CTES` (a column each)."""
    return [list(column) for column in zip(*fences, strict=True)]


async def drop_ticket(cur: Any, agent_id: str, holder: str) -> None:
    """Leave the agent's queue (a waiter that gave up)."""
    await cur.execute("DELETE FROM lease_waiters WHERE agent_id = $1 AND holder = $2", agent_id, holder)


async def peek(cur: Any, agent_id: str,
               now: float) -> tuple[int | None, str | None, float | None, int, int, int, bool] | None:
    """Read-only: ``(token, holder, expires_at, last_seq, version, tools_version, waiters)``, None if the
    agent is gone."""
    row = await cur.fetchrow(
        "SELECT l.token, l.holder, l.expires_at, a.last_seq, a.version, "
        "coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0), "
        "EXISTS (SELECT 1 FROM lease_waiters w WHERE w.agent_id = a.id AND w.expires_at >= $1) "
        "FROM agents a LEFT JOIN agent_leases l ON l.agent_id = a.id WHERE a.id = $2", now, agent_id)
    return None if row is None else (row[0], row[1], row[2], row[3], row[4], row[5], row[6])
