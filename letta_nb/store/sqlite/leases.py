"""Lease rows: which process may write an agent's turns, fenced by a token that only grows.

These functions run inside the caller's write transaction on a raw DB-API cursor (the step writer's group
commit, see step_writer.py), so taking a lease costs one row write in a transaction that many agents share.
The runtime side (queueing, renewal, probes) is runtime/leases.py; the protocol these functions
satisfy (and the Grant and Busy they return) is store/backend.py's LeaseRows.

Invariants:
- ``agent_leases.token`` is incremented by every grant and never reset: a commit that carries an older token
  than the row's belongs to a turn whose lease was lost, and is refused (:func:`fenced_update`).
- A lease is granted to the oldest live waiter first (``lease_waiters.id`` is arrival order across
  processes); a waiter that stops renewing its ticket (a killed process) drops out when the ticket expires,
  and a holder that stops renewing loses the lease when it expires.
- The agent's ``last_seq`` and ``version`` are read in the same transaction as the grant, so the turn knows
  at once whether its cached session is stale.
"""

from __future__ import annotations

from typing import Any

from letta_nb.store.backend import Busy, Grant

__all__ = ["HELD", "acquire", "agent_state", "peek", "release", "renew", "fenced_update", "holds", "bump_version",
           "counter", "bump_counter"]

#: One row if the lease ``:token`` on agent ``:agent_id`` still holds. Named parameters, so the same text
#: serves a raw cursor (:func:`holds`) and ``sqlalchemy.text`` (store.py, files.py): the fence of a change
#: that writes no step (passages, files), checked inside that change's own write transaction.
HELD = "SELECT 1 FROM agent_leases WHERE agent_id = :agent_id AND token = :token AND holder IS NOT NULL"


def acquire(cur: Any, agent_id: str, holder: str, pid: int, host: str, now: float, ttl: float,
            ticket_ttl: float) -> Grant | Busy | None:
    """Take the agent's lease if it is free or expired and no older live waiter is queued; else queue (or
    keep) our ticket and say who holds it. ``None``: the agent does not exist."""
    agent = agent_state(cur, agent_id)
    if agent is None:
        cur.execute("DELETE FROM lease_waiters WHERE agent_id = ?", (agent_id,))
        return None
    cur.execute("DELETE FROM lease_waiters WHERE agent_id = ? AND expires_at < ?", (agent_id, now))
    row = cur.execute("SELECT token, holder, pid, host, since, expires_at FROM agent_leases WHERE agent_id = ?",
                      (agent_id,)).fetchone()
    held = row is not None and row[1] is not None and row[1] != holder and row[5] >= now
    first = cur.execute("SELECT holder FROM lease_waiters WHERE agent_id = ? ORDER BY id LIMIT 1",
                        (agent_id,)).fetchone()
    if held or (first is not None and first[0] != holder):
        mine = cur.execute("UPDATE lease_waiters SET expires_at = ? WHERE agent_id = ? AND holder = ?",
                           (now + ticket_ttl, agent_id, holder)).rowcount
        if not mine:
            cur.execute("INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES (?, ?, ?)",
                        (agent_id, holder, now + ticket_ttl))
        if held:
            return Busy(row[1], row[2], row[3], row[4], row[5])
        return Busy(None, None, None, None, None)  # free, but an older waiter goes first
    took_expired = row is not None and row[1] is not None and row[1] != holder
    token = (row[0] if row is not None else 0) + 1
    cur.execute(
        "INSERT INTO agent_leases (agent_id, token, holder, pid, host, since, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET token = excluded.token, "
        "holder = excluded.holder, pid = excluded.pid, host = excluded.host, since = excluded.since, "
        "expires_at = excluded.expires_at",
        (agent_id, token, holder, pid, host, now, now + ttl))
    if first is not None:
        cur.execute("DELETE FROM lease_waiters WHERE agent_id = ? AND holder = ?", (agent_id, holder))
    return Grant(token, agent[0], agent[1], agent[2], took_expired)


def agent_state(cur: Any, agent_id: str) -> tuple[int, int, int] | None:
    """``(last_seq, version, tools_version)`` of an agent, None if it is gone: one indexed row, what every
    process compares with its cached session before using it."""
    row: tuple[int, int, int] | None = cur.execute(
        "SELECT last_seq, version, coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0) "
        "FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return row


def renew(cur: Any, agent_id: str, token: int, expires_at: float) -> bool:
    """Extend our lease; False if it is no longer ours."""
    return bool(cur.execute("UPDATE agent_leases SET expires_at = ? WHERE agent_id = ? AND token = ? "
                            "AND holder IS NOT NULL", (expires_at, agent_id, token)).rowcount == 1)


def release(cur: Any, agent_id: str, token: int) -> bool:
    """Give the lease up (a no-op if it is no longer ours)."""
    return bool(cur.execute("UPDATE agent_leases SET holder = NULL, expires_at = NULL WHERE agent_id = ? AND token = ?",
                            (agent_id, token)).rowcount == 1)


def fenced_update(cur: Any, agent_id: str, token: int, expected_last_seq: int, columns: dict[str, Any],
                  now: float) -> bool | None:
    """Update the agent row only if our lease still holds and ``last_seq`` is what the turn read: the
    compare-and-set every step commit starts with. None: refused (nothing written). Else whether a live waiter
    (its ticket unexpired at ``now``) is queued for the lease, read under the write lock: the turn's end needs
    no read of its own to know whether to hand the lease over (runtime/leases.py ``done``; PostgreSQL's
    statement answers the same, postgres/leases.py ``landed``)."""
    cols = tuple(columns)
    sql = _FENCED.get(cols)
    if sql is None:  # a step sets one of a few column sets: each text is built (and prepared) once
        sql = _FENCED[cols] = (f"UPDATE agents SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ? AND "
                               "last_seq = ? AND (SELECT token FROM agent_leases WHERE agent_id = ? AND "
                               "holder IS NOT NULL) = ? RETURNING EXISTS (SELECT 1 FROM lease_waiters w "
                               "WHERE w.agent_id = agents.id AND w.expires_at >= ?)")
    row = cur.execute(sql, (*columns.values(), agent_id, expected_last_seq, agent_id, token, now)).fetchone()
    return None if row is None else bool(row[0])


_FENCED: dict[tuple[str, ...], str] = {}


def holds(cur: Any, agent_id: str, token: int) -> bool:
    """Whether our lease still holds; run first in a write transaction, it fences the whole transaction (the
    write lock is ours until COMMIT, so nobody can take the lease in between)."""
    return cur.execute(HELD, {"agent_id": agent_id, "token": token}).fetchone() is not None


def bump_version(cur: Any, agent_id: str, token: int | None) -> bool:
    """A change that is not a step (blocks, tools, settings): other processes reload the agent. With a
    ``token``, only while our lease holds."""
    if token is None:
        return bool(cur.execute("UPDATE agents SET version = version + 1 WHERE id = ?", (agent_id,)).rowcount == 1)
    return bool(cur.execute(
        "UPDATE agents SET version = version + 1 WHERE id = ? AND "
        "(SELECT token FROM agent_leases WHERE agent_id = ? AND holder IS NOT NULL) = ?",
        (agent_id, agent_id, token)).rowcount == 1)


def counter(cur: Any, name: str) -> int:
    row = cur.execute("SELECT value FROM store_counters WHERE name = ?", (name,)).fetchone()
    return row[0] if row else 0


def bump_counter(cur: Any, name: str) -> None:
    cur.execute("INSERT INTO store_counters (name, value) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1", (name,))


def peek(cur: Any, agent_id: str,
         now: float) -> tuple[int | None, str | None, float | None, int, int, int, bool] | None:
    """Read-only: ``(token, holder, expires_at, last_seq, version, tools_version, waiters)`` of an agent, None
    if it is gone. Lets a process that still holds a lease from its previous turn reuse it without a write."""
    row: tuple[int | None, str | None, float | None, int, int, int, bool] | None = cur.execute(
        "SELECT l.token, l.holder, l.expires_at, a.last_seq, a.version, "
        "coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0), "
        "EXISTS (SELECT 1 FROM lease_waiters w WHERE w.agent_id = a.id AND w.expires_at >= ?) "
        "FROM agents a LEFT JOIN agent_leases l ON l.agent_id = a.id WHERE a.id = ?", (now, agent_id)).fetchone()
    return row


def drop_ticket(cur: Any, agent_id: str, holder: str) -> None:
    """Leave the agent's queue (a waiter that gave up)."""
    cur.execute("DELETE FROM lease_waiters WHERE agent_id = ? AND holder = ?", (agent_id, holder))
