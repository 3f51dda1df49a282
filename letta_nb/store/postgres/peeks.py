"""Lease peeks in batches: every :func:`leases.peek` asked for while one is in flight joins the next query.

Why: a turn on PostgreSQL peeks at its agent's lease row when it reuses the lease kept from the last turn
(runtime/leases.py; its end's question, does anyone wait, is answered by its commit since: leases.landed).
Alone that is one indexed row; with 100 agents talking at once the peeks (then two a turn) were 1.9 of a
turn's 3.3 round trips, each a pool checkout and a wake-up of a server process on a loaded host (``bench
concurrency --backend postgres``). Batched like the step writer's group commit (no timer: whatever arrives
during a read joins the next one), a burst of peeks is one query.

Up to :data:`IN_FLIGHT` queries run at once, each on its own connection: a peek that arrives while one is
out goes at once on another (the turn-start peek is on the turn's critical path; queued behind a batch in
flight it waited for that batch and then its own), and only beyond that do peeks wait and batch.

The first of those connections is the batcher's own (opened on first use, again after it was lost), the
second a pooled one: a pool checkout and checkin cost ~75 us of the loop's CPU (asyncpg's pool, measured:
a lone peek 154 us through the pool, 81 us on a held connection), paid twice a turn by a lone agent.

Each peek keeps its own ``now`` (a waiter's ticket counts if it has not expired by then), so a batched
answer is the one :func:`leases.peek` would have given alone, read a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from letta_nb._batching import Batcher
from letta_nb.store.postgres import leases

__all__ = ["IN_FLIGHT", "PeekBatcher", "PEEK_MANY", "warm_connection"]

IN_FLIGHT = 2  # queries out at once (of the pool's LETTA_NB_PG_POOL connections, default 4: backend.py)

PEEK_MANY = (
    "SELECT q.i, l.token, l.holder, l.expires_at, a.last_seq, a.version, "
    "coalesce((SELECT value FROM store_counters WHERE name = 'tools'), 0), "
    "EXISTS (SELECT 1 FROM lease_waiters w WHERE w.agent_id = a.id AND w.expires_at >= q.now) "
    "FROM unnest($1::text[], $2::float8[]) WITH ORDINALITY AS q (agent_id, now, i) "
    "JOIN agents a ON a.id = q.agent_id LEFT JOIN agent_leases l ON l.agent_id = a.id")

Peek = tuple[Any, ...] | None
_Request = tuple[str, float, "asyncio.Future[Peek]"]


class PeekBatcher(Batcher[_Request]):
    """Answers peeks on its own connection (``connect()`` opens it; None: pooled ones only) or a pooled one,
    many to a query (letta_nb/_batching.py). Must be used from one event loop."""

    def __init__(self, pool: Any, connect: Callable[[], Awaitable[Any]] | None = None):
        super().__init__(IN_FLIGHT)
        self._pool = pool
        self._connect = connect
        self._own: Any = None
        self._own_busy = False
        self._warming: asyncio.Task[None] | None = None
        self.queries = 0
        self.peeks = 0

    def warm(self) -> None:
        """Open the batcher's own connection now, in the background, and run both peek queries once (a peek
        of no agent): the turns right after the store opened then find it ready (PgStepWriter.warm). Peeks
        that come meanwhile go on pooled connections."""
        if self._connect is not None and not self._own_busy and self._own is None:
            self._own_busy = True
            self._warming = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        assert self._connect is not None  # warm() starts this only then
        try:
            with contextlib.suppress(Exception):  # failed: the next drain opens a fresh one
                self._own = await warm_connection(self._connect, _warm_up)
        finally:
            self._own_busy = False
            self._kick(asyncio.get_running_loop())

    def peek(self, agent_id: str, now: float) -> asyncio.Future[Peek]:
        """``(token, holder, expires_at, last_seq, version, tools_version, waiters)`` or None (no such
        agent), as :func:`leases.peek` gives it."""
        fut: asyncio.Future[Peek] = asyncio.get_running_loop().create_future()
        self._add((agent_id, now, fut))
        return fut

    async def _run(self) -> None:
        own = self._connect is not None and not self._own_busy
        self._own_busy = self._own_busy or own
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    if own:
                        rows = await _ask(await self._own_connection(), batch)
                    else:
                        async with self._pool.acquire() as conn:
                            rows = await _ask(conn, batch)
                except BaseException as e:
                    if own:  # failed or interrupted mid-query: the next drain opens a fresh one
                        self.close()
                    self._fail((fut for _, _, fut in batch), e, "the peek was cancelled")
                    if not isinstance(e, Exception):
                        raise
                    continue
                self._answer(batch, rows)
        finally:
            if own:
                self._own_busy = False

    async def _own_connection(self) -> Any:
        if self._own is None or self._own.is_closed():
            assert self._connect is not None  # only a batcher given connect() drains on its own connection
            self._own = await self._connect()
        return self._own

    def close(self) -> None:
        """Drop the batcher's own connection (the store is closing, or a query on it failed)."""
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
        if self._own is not None:
            self._own.terminate()
            self._own = None

    def _answer(self, batch: list[_Request], rows: list[Any]) -> None:
        self.queries += 1
        self.peeks += len(batch)
        answers = {int(r[0]) - 1: tuple(r[1:]) for r in rows}  # by the request's place in the batch
        for i, (_, _, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result(answers.get(i))


async def warm_connection(connect: Callable[[], Awaitable[Any]], warm_up: Callable[[Any], Awaitable[None]]) -> Any:
    """A connection from ``connect()`` on which ``warm_up(conn)`` has run its statements once (prepared, and
    plpgsql functions compiled); one that fails or is cancelled meanwhile is closed, not left open. Used for
    the step writer's connection (PgStepWriter.warm), this batcher's own, and their codecs (backend.py)."""
    conn = await connect()
    try:
        await warm_up(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def _warm_up(conn: Any) -> None:
    """Both peek queries once, of no agent."""
    await leases.peek(conn, "", 0.0)
    await conn.fetch(PEEK_MANY, [], [])


async def _ask(conn: Any, batch: list[_Request]) -> list[Any]:
    """The rows answering ``batch``: ``(place in the batch from 1, *peek)`` each."""
    if len(batch) == 1:  # alone: the plain indexed read (the batched query costs more to plan)
        one = await leases.peek(conn, batch[0][0], batch[0][1])
        return [] if one is None else [(1, *one)]
    rows: list[Any] = await conn.fetch(PEEK_MANY, [a for a, _, _ in batch], [n for _, n, _ in batch])
    return rows
