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
from collections.abc import Callable
from typing import Any

from letta_nb.store.backend import Busy, Grant

__all__ = ["acquire", "acquire_many", "agent_state", "DDL", "drop_ticket", "Fence", "FENCE_CTES", "fence_params",
           "fenced_updates", "install", "install_many", "landed", "MANY", "peek", "release", "renew"]

_STATE = ("SELECT last_seq, version, coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0) "
          "FROM agents WHERE id = $1")


async def agent_state(cur: Any, agent_id: str) -> tuple[int, int, int] | None:
    """``(last_seq, version, tools_version)``, None if the agent is gone."""
    row = await cur.fetchrow(_STATE, agent_id)
    return None if row is None else (row[0], row[1], row[2])


# A grant and an install are each one server-side function (made by schema.ensure), one round trip: as seven and
# five statements they were seven and five round trips inside the step writer's group, one after another, so a
# hundred agents starting their first turns at once waited ~250 ms for their leases (bench concurrency --backend
# postgres, issue 12). The statements are the same, in the same order; each one in a VOLATILE function takes a
# fresh snapshot, so the agent's state read after the row lock sees the previous holder's commits, as before.
DDL = (
    """CREATE OR REPLACE FUNCTION letta_nb_lease_acquire(p_agent text, p_holder text, p_pid int, p_host text,
  p_now float8, p_ttl float8, p_ticket_ttl float8, OUT r_kind text, OUT r_token int, OUT r_holder text,
  OUT r_pid int, OUT r_host text, OUT r_since float8, OUT r_expires_at float8, OUT r_last_seq int,
  OUT r_version int, OUT r_tools_version int, OUT r_took_expired bool) LANGUAGE plpgsql AS $$
DECLARE
  l_token int; l_holder text; l_pid int; l_host text; l_since float8; l_expires float8;
  first_holder text; held bool;
BEGIN
  PERFORM 1 FROM agents a WHERE a.id = p_agent;
  IF NOT FOUND THEN
    DELETE FROM lease_waiters w WHERE w.agent_id = p_agent;
    r_kind := 'gone'; RETURN;
  END IF;
  INSERT INTO agent_leases (agent_id, token) VALUES (p_agent, 0) ON CONFLICT (agent_id) DO NOTHING;
  SELECT l.token, l.holder, l.pid, l.host, l.since, l.expires_at
    INTO l_token, l_holder, l_pid, l_host, l_since, l_expires
    FROM agent_leases l WHERE l.agent_id = p_agent FOR UPDATE;
  IF NOT FOUND THEN r_kind := 'gone'; RETURN; END IF;
  SELECT a.last_seq, a.version, coalesce((SELECT c.value FROM store_counters c WHERE c.name = 'tools'), 0)
    INTO r_last_seq, r_version, r_tools_version FROM agents a WHERE a.id = p_agent;
  IF NOT FOUND THEN r_kind := 'gone'; RETURN; END IF;
  DELETE FROM lease_waiters w WHERE w.agent_id = p_agent AND w.expires_at < p_now;
  held := coalesce(l_holder IS NOT NULL AND l_holder <> p_holder AND l_expires >= p_now, false);
  SELECT w.holder INTO first_holder FROM lease_waiters w WHERE w.agent_id = p_agent ORDER BY w.id LIMIT 1;
  IF held OR (first_holder IS NOT NULL AND first_holder <> p_holder) THEN
    UPDATE lease_waiters w SET expires_at = p_now + p_ticket_ttl WHERE w.agent_id = p_agent AND w.holder = p_holder;
    IF NOT FOUND THEN
      INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES (p_agent, p_holder, p_now + p_ticket_ttl);
    END IF;
    r_kind := 'busy';
    IF held THEN
      r_holder := l_holder; r_pid := l_pid; r_host := l_host; r_since := l_since; r_expires_at := l_expires;
    END IF;
    RETURN;
  END IF;
  r_took_expired := l_holder IS NOT NULL AND l_holder <> p_holder;
  r_token := l_token + 1;
  UPDATE agent_leases l SET token = r_token, holder = p_holder, pid = p_pid, host = p_host, since = p_now,
    expires_at = p_now + p_ttl WHERE l.agent_id = p_agent;
  IF first_holder IS NOT NULL THEN
    DELETE FROM lease_waiters w WHERE w.agent_id = p_agent AND w.holder = p_holder;
  END IF;
  r_kind := 'grant';
END $$""",
    """CREATE OR REPLACE FUNCTION letta_nb_lease_install(p_agent text, p_token int, p_holder text, p_pid int,
  p_host text, p_now float8, p_ttl float8, OUT r_kind text, OUT r_token int, OUT r_last_seq int,
  OUT r_version int, OUT r_tools_version int, OUT r_took_expired bool) LANGUAGE plpgsql AS $$
DECLARE
  l_token int; l_holder text;
BEGIN
  PERFORM 1 FROM agents a WHERE a.id = p_agent;
  IF NOT FOUND THEN r_kind := 'gone'; RETURN; END IF;
  INSERT INTO agent_leases (agent_id, token) VALUES (p_agent, 0) ON CONFLICT (agent_id) DO NOTHING;
  SELECT l.token, l.holder INTO l_token, l_holder FROM agent_leases l WHERE l.agent_id = p_agent FOR UPDATE;
  IF NOT FOUND THEN r_kind := 'gone'; RETURN; END IF;
  SELECT a.last_seq, a.version, coalesce((SELECT c.value FROM store_counters c WHERE c.name = 'tools'), 0)
    INTO r_last_seq, r_version, r_tools_version FROM agents a WHERE a.id = p_agent;
  IF NOT FOUND THEN r_kind := 'gone'; RETURN; END IF;
  IF l_token >= p_token THEN
    r_kind := 'behind'; r_token := l_token; RETURN;
  END IF;
  UPDATE agent_leases l SET token = p_token, holder = p_holder, pid = p_pid, host = p_host, since = p_now,
    expires_at = p_now + p_ttl WHERE l.agent_id = p_agent;
  r_kind := 'grant'; r_token := p_token;
  r_took_expired := l_holder IS NOT NULL AND l_holder <> p_holder;
END $$""",
)


class _LeaseFunction:
    """A lease function of :data:`DDL` called for one agent, or for several in one statement (the function per
    row of an ``unnest``, one after another in the order given: the step writer's lock order), each row's
    answer read by ``answer``."""

    def __init__(self, name: str, args: tuple[tuple[str, str], ...], answer: Callable[[Any], Any]):
        self.args = args
        self.names = tuple(n for n, _ in args)
        self.answer = answer
        self.one_sql = f"SELECT * FROM {name}({', '.join(f'${k}' for k in range(1, len(args) + 1))})"
        arrays = ", ".join(f"${k}::{t}[]" for k, (_, t) in enumerate(args, start=1))
        self.many_sql = (f"SELECT r.* FROM unnest({arrays}) WITH ORDINALITY AS q ({', '.join(self.names)}, i) "
                         f"CROSS JOIN LATERAL {name}({', '.join(f'q.{n}' for n in self.names)}) r ORDER BY q.i")

    async def one(self, cur: Any, *values: Any) -> Any:
        return self.answer(await cur.fetchrow(self.one_sql, *values))

    async def warm(self, cur: Any) -> None:
        """Run both statements once with nothing to grant (no such agent, no rows): the connection then has
        them prepared and the function compiled (see :func:`warm_up`)."""
        await cur.fetchrow(self.one_sql, *(_NOTHING[kind] for _, kind in self.args))
        await cur.fetch(self.many_sql, *([] for _ in self.args))

    async def many(self, cur: Any, requests: list[dict[str, Any]]) -> list[Any]:
        if len(requests) == 1:
            return [await self.one(cur, *(requests[0][n] for n in self.names))]
        rows = await cur.fetch(self.many_sql, *([r[n] for r in requests] for n in self.names))
        return [self.answer(r) for r in rows]


_NOTHING = {"text": "", "int": 0, "float8": 0.0}  # arguments naming no agent (an agent's id is never empty)


def _granted(r: Any) -> Grant | Busy | None:
    if r[0] == "gone":
        return None
    if r[0] == "busy":
        return Busy(r[2], r[3], r[4], r[5], r[6])
    return Grant(r[1], r[7], r[8], r[9], r[10])


def _installed(r: Any) -> Grant | int | None:
    if r[0] == "gone":
        return None
    if r[0] == "behind":
        return int(r[1])
    return Grant(r[1], r[2], r[3], r[4], bool(r[5]))


_ACQUIRE = _LeaseFunction("letta_nb_lease_acquire", (
    ("agent_id", "text"), ("holder", "text"), ("pid", "int"), ("host", "text"), ("now", "float8"), ("ttl", "float8"),
    ("ticket_ttl", "float8")), _granted)
_INSTALL = _LeaseFunction("letta_nb_lease_install", (
    ("agent_id", "text"), ("token", "int"), ("holder", "text"), ("pid", "int"), ("host", "text"), ("now", "float8"),
    ("ttl", "float8")), _installed)


async def acquire(cur: Any, agent_id: str, holder: str, pid: int, host: str, now: float, ttl: float,
                  ticket_ttl: float) -> Grant | Busy | None:
    """Take the lease if it is free or expired and no older live waiter is queued; else queue (or keep) our
    ticket. ``None``: the agent does not exist. One call of ``letta_nb_lease_acquire`` (:data:`DDL`): the row
    lock first, then the agent's state, the expired tickets dropped, the queue's head read, and then a ticket
    queued or renewed (busy) or the token bumped (granted)."""
    granted: Grant | Busy | None = await _ACQUIRE.one(cur, agent_id, holder, pid, host, now, ttl, ticket_ttl)
    return granted


async def acquire_many(cur: Any, requests: list[dict[str, Any]]) -> list[Grant | Busy | None]:
    """:func:`acquire` of several agents (``requests``: its keyword arguments each) in one statement, one after
    another in the order given: the first turns of a hundred agents starting at once are one round trip."""
    return await _ACQUIRE.many(cur, requests)


async def warm_up(cur: Any) -> None:
    """Compile both lease functions and prepare their statements on a fresh connection. Why: on first use in
    a session PostgreSQL compiles a plpgsql function and plans its statements; a hundred agents' first grants
    took 26 ms there against 5 ms on a warm connection, on the first turn's path. With no agent named,
    nothing is written (``letta_nb_lease_acquire`` deletes the tickets of an agent that does not exist: none)."""
    for function in (_ACQUIRE, _INSTALL):
        await function.warm(cur)


async def install(cur: Any, agent_id: str, token: int, holder: str, pid: int, host: str, now: float,
                  ttl: float) -> Grant | int | None:
    """Make a lease granted elsewhere (Redis: runtime/redis_leases.py) the one commits are fenced on: write its
    ``token`` into the agent's lease row if it is above the row's, and read the agent's state after the row
    lock (as :func:`acquire` does; one call of ``letta_nb_lease_install``). An ``int``: the row's token, which
    ours is not above (Redis lost its counter), nothing written; ``None``: the agent does not exist.
    ``took_expired``: the row still named another holder (it never released: killed, paused, or its Redis key
    was lost)."""
    installed: Grant | int | None = await _INSTALL.one(cur, agent_id, token, holder, pid, host, now, ttl)
    return installed


async def install_many(cur: Any, requests: list[dict[str, Any]]) -> list[Grant | int | None]:
    """:func:`install` of several agents in one statement, in the order given (see :func:`acquire_many`)."""
    return await _INSTALL.many(cur, requests)


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
agents whose update landed. The step writer adds the steps' rows to the same statement (group_commit.py)."""


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


#: The grant ops the step writer sends many to a statement (group_commit._many_of), each with the function
#: that makes many of them at once.
MANY: dict[Any, Any] = {acquire: acquire_many, install: install_many}
