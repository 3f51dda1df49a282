"""How the runtime's leases (runtime/leases.py) coordinate through the store's lease rows: a grant or a ticket, a
peek, a renewal, a release, each one op or read of the store's step writer (store/sqlite/leases.py,
store/postgres/leases.py). runtime/redis_leases.py overrides these to coordinate through Redis instead.

Kept apart from the policy in runtime/leases.py (when to reuse, queue, renew or give up a lease): these say only
how one such step is asked of the store.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from typing import TYPE_CHECKING, Any

from letta_nb.store.backend import Busy, Grant

if TYPE_CHECKING:
    from letta_nb.runtime.leases import Lease

__all__ = ["TICKET_TTL", "RowCoordination"]

TICKET_TTL = 5.0  # a waiter renews its ticket every third of this; one that stops (killed) drops out after it


class RowCoordination:
    """The lease steps of an AgentLeases on its store's lease rows (``_rows``, run by ``_writer``)."""

    _writer: Any
    _rows: Any
    holder: str
    pid: int
    host: str
    ttl: float

    async def _read(self, fn: Any) -> Any:
        """A read of the writer's (sync on SQLite, awaitable on PostgreSQL)."""
        value = self._writer.read(fn)
        return await value if inspect.isawaitable(value) else value

    async def _try(self, agent_id: str) -> Grant | Busy | None:
        """One attempt at the lease: granted, busy (our ticket queued or kept), or None (no such agent)."""
        op = functools.partial(self._rows.acquire, agent_id=agent_id, holder=self.holder, pid=self.pid,
                               host=self.host, now=time.time(), ttl=self.ttl, ticket_ttl=TICKET_TTL)
        result: Grant | Busy | None = await self._writer.submit(op)
        return result

    def _peek_op(self, agent_id: str, now: float) -> functools.partial[Any]:
        """The peek as the writer reads it: keywords only, the shape PostgreSQL's writer batches (PgStepWriter.read)."""
        return functools.partial(self._rows.peek, agent_id=agent_id, now=now)

    async def _peek(self, agent_id: str, now: float) -> Any:
        """``(token, holder, expires_at, last_seq, version, tools_version, waiters)`` or None (store/backend.py)."""
        return await self._read(self._peek_op(agent_id, now))

    def _check_read(self, agent_id: str, now: float) -> asyncio.Future[Any]:
        """The read :meth:`acquire` overlaps with a turn (``speculate``), started now: the peek batcher's own
        future on PostgreSQL (no task a turn), else a task of :meth:`_peek`."""
        read = self._writer.read(self._peek_op(agent_id, now))
        return read if isinstance(read, asyncio.Future) else asyncio.ensure_future(read)

    def _peek_now(self, agent_id: str) -> Any:
        """:meth:`_peek` as the writer gives it: a value (SQLite) or an awaitable."""
        return self._writer.read(self._peek_op(agent_id, time.time()))

    async def _looks_free(self, agent_id: str) -> bool:
        """A waiter's cheap read: the lease looks free or expired (or the agent is gone): try again."""
        now = time.time()
        row = await self._peek(agent_id, now)
        return row is None or row[1] is None or row[2] < now

    async def _renew(self, lease: Lease, expires_at: float) -> bool:
        op = functools.partial(self._rows.renew, agent_id=lease.agent_id, token=lease.token, expires_at=expires_at)
        return bool(await self._writer.submit(op))

    async def _release(self, lease: Lease) -> None:
        await self._writer.submit(functools.partial(self._rows.release, agent_id=lease.agent_id, token=lease.token))

    async def _drop_ticket(self, agent_id: str) -> None:
        await self._writer.submit(functools.partial(self._rows.drop_ticket, agent_id=agent_id, holder=self.holder))
