"""The PostgreSQL step writer: every row a step produces, committed atomically on a raw asyncpg connection,
with adaptive group commit.

Why raw asyncpg: the same 3-row transaction costs ~0.4-1 ms through asyncpg and ~4 ms through SQLAlchemy's
async engine on this kind of machine (shared/DESIGN.md), so the hot path skips SQLAlchemy; the statements
(postgres/group_commit.py) are still generated from the migrated tables, so they cannot drift from the schema.

Invariants (those of store/sqlite/step_writer.py, on a server):
- A :class:`StepWrite` is applied in one transaction: all there or absent.
- **Adaptive group commit, no timer:** one drain task commits whatever is pending; everything submitted
  while a commit is in flight joins the next one. Alone, a write commits at once; under load, groups grow
  by themselves with the commit latency.
- **Few round trips** (each wakes a server process; on a loaded 2-core host they were most of a step's
  cost): a group of plain step commits (fences, messages, steps) is one statement with no BEGIN/COMMIT
  (postgres/group_commit.py: 11 round trips a step became 3 with the lease peeks, postgres/peeks.py, and 2
  since the statement also says whether anyone waits for each lease it fenced, the turn's end's question:
  :meth:`PgStepWriter.waiters`); any other group is one transaction whose fences are one statement per run
  of agents.
- A fenced write is a compare-and-set on (lease token, ``last_seq``) in the group's statement or transaction
  (postgres/leases.py); a stale write drops out of its group, nothing of it written, and fails with
  StaleCommitError while the rest commits. If a group fails (a constraint, a deadlock with another
  process's group), each item is retried alone, so only the offending one fails.
- A write that was submitted is committed even if its submitter is cancelled (callers wait under
  ``asyncio.shield``); a commit interrupted by cancellation is rolled back (asyncpg's transaction block),
  so no connection is left "idle in transaction"; the server ends one that is anyway after
  ``idle_in_transaction_session_timeout`` (engine.IDLE_IN_TRANSACTION_MS).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from letta_nb.store.backend import Op, StepWrite, settle_group
from letta_nb.store.postgres import group_commit, leases
from letta_nb.store.postgres.peeks import PeekBatcher, warm_connection

__all__ = ["PgStepWriter"]

_TRANSIENT = ("40P01", "40001")  # deadlock_detected, serialization_failure: run the transaction again
Item = tuple["StepWrite | Op", "asyncio.Future[Any]"]


class PgStepWriter:
    """Commits step writes (and lease ops) in adaptive groups on one asyncpg connection; reads on a pool.

    ``connect()`` opens the writer's connection (again after it was lost); ``pool`` serves :meth:`read`.
    Must be used from one event loop (the runtime's).
    """

    def __init__(self, connect: Callable[[], Awaitable[Any]], pool: Any):
        self._connect = connect
        self._pool = pool
        self._conn: Any = None
        self.peeks = PeekBatcher(pool, connect)  # its own connection, opened as the writer's is
        self._pending: list[Item] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0
        self.refused = 0  # fenced writes refused: their lease was lost
        self.largest_group = 0
        self.retries = 0  # groups run again after a deadlock or serialization failure
        self._waiters: dict[str, tuple[int, bool]] = {}  # agent -> (token, waiter queued) of its last landed commit
        self._warming: asyncio.Task[None] | None = None
        # Each pending plain write's rows, made as it was submitted (group_commit.prepare), by id(write).
        self._prepared: dict[int, tuple[str, str] | None] = {}

    def warm(self) -> None:
        """Open the writer's connection and the peek batcher's now, in the background, and run their hot
        statements once (group_commit.warm_up, postgres/peeks.py): opened lazily, a hundred agents' first turns after
        the store opened waited ~35 ms for them (``bench concurrency --backend postgres``, issue 12). A commit
        that comes meanwhile waits for the warm-up; one that failed is dropped (the commit opens its own)."""
        loop = asyncio.get_running_loop()
        self._warming = loop.create_task(self._warm())
        self.peeks.warm()

    async def warmed(self) -> None:
        """Wait until the warm-ups :meth:`warm` started are over (done, failed or cancelled): the peek batcher
        then peeks on its own connection (tests that count its pooled checkouts start from here)."""
        tasks = [t for t in (self._warming, self.peeks._warming) if t is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def _warm(self) -> None:
        with contextlib.suppress(Exception):  # failed: the first commit opens its own
            self._conn = await warm_connection(self._connect, group_commit.warm_up)

    def submit(self, write: StepWrite | Op) -> asyncio.Future[Any]:
        """Queue a write (or an op, a function of the asyncpg connection, sync or async); the future resolves
        once its group committed: to the commit's ms (an op: to its value); StaleCommitError if refused."""
        if self._closed:
            raise RuntimeError("the step writer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if isinstance(write, StepWrite):
            self._prepared[id(write)] = group_commit.prepare(write)
        self._pending.append((write, fut))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = loop.create_task(self._drain())
        return fut

    def waiters(self, agent_id: str, token: int) -> bool | None:
        """Whether a waiter was queued for the agent's lease when its last fenced commit under ``token`` landed
        (read in that commit's statement, leases.landed); None: no such commit since this was last asked (each
        answer is given once: runtime/leases.py ``done`` asks at the end of the turn that made the commit)."""
        seen = self._waiters.pop(agent_id, None)
        return seen[1] if seen is not None and seen[0] == token else None

    def read(self, fn: Callable[[Any], Any]) -> Awaitable[Any]:
        """``fn(connection)`` on a pooled connection, as an awaitable (asyncpg cannot read synchronously):
        callers await what ``read`` returns when it is awaitable (runtime/leases.py). Lease peeks
        (``functools.partial(leases.peek, agent_id=..., now=...)``) are batched (postgres/peeks.py)."""
        if isinstance(fn, functools.partial) and fn.func is leases.peek and not fn.args:
            return self.peeks.peek(fn.keywords["agent_id"], fn.keywords["now"])
        return self._read(fn)

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        async with self._pool.acquire() as conn:
            value = fn(conn)
            return await value if inspect.isawaitable(value) else value

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        while self._drain_task is not None and not self._drain_task.done():
            await asyncio.shield(self._drain_task)

    def close(self) -> None:
        """Refuse new writes and drop the connection (``await drain()`` first to commit what was submitted:
        Store.close does)."""
        self._closed = True
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(RuntimeError("the step writer closed before this write was committed"))
        self._pending = []
        self._prepared.clear()
        if self._warming is not None:
            self._warming.cancel()
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        self.peeks.close()

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._commit(batch)
            except Exception as e:  # no connection: this group fails, the next one tries again
                for _, fut in batch:
                    _settle(fut, error=e)
            except BaseException:  # cancelled (the loop is shutting down): nobody may wait forever
                for _, fut in batch + self._pending:
                    _settle(fut, error=RuntimeError("the step writer stopped before this write was committed"))
                self._pending = []
                self._prepared.clear()
                raise
            finally:
                for item, _ in batch:
                    self._prepared.pop(id(item), None)

    async def _connection(self) -> Any:
        if self._warming is not None:  # its statements run on the connection: it must be done first
            await asyncio.shield(self._warming)
            self._warming = None
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

    async def _commit(self, batch: list[Item]) -> None:
        t0 = time.perf_counter()
        try:
            results = await self._transaction([w for w, _ in batch])
        except Exception as e:
            await self._isolate(batch, e)
            return
        self._done(batch, results, (time.perf_counter() - t0) * 1000)

    async def _transaction(self, items: list[StepWrite | Op], attempts: int = 3) -> list[Any]:
        """group_commit.transaction, again when the server aborted it as a deadlock victim or a serialization
        failure (the groups lock in one order, so only other writers, e.g. a cascade, can cause one). Keeps
        what its fences said of waiters for :meth:`waiters`."""
        for attempt in range(attempts):
            waiters: dict[str, bool] = {}
            try:
                results = await group_commit.transaction(await self._connection(), items, waiters, self._prepared)
            except Exception as e:
                if getattr(e, "sqlstate", None) not in _TRANSIENT or attempt == attempts - 1:
                    raise
                self.retries += 1
                continue
            for item in items:
                if isinstance(item, StepWrite) and item.fence is not None and item.agent_id in waiters:
                    self._waiters[item.agent_id] = (item.fence[0], waiters[item.agent_id])
            return results
        raise AssertionError("unreachable")

    async def _isolate(self, batch: list[Item], error: Exception) -> None:
        """A group failed: retry each item alone so only the offending ones fail."""
        if len(batch) == 1:
            _settle(batch[0][1], error=error)
            return
        for item, fut in batch:
            t1 = time.perf_counter()
            try:
                results = await self._transaction([item])
            except Exception as e:
                _settle(fut, error=e)
            else:
                self._done([(item, fut)], results, (time.perf_counter() - t1) * 1000)

    def _done(self, batch: list[Item], results: list[Any], ms: float) -> None:
        self.commits += 1
        self.writes += len(batch)
        self.largest_group = max(self.largest_group, len(batch))
        self.refused += settle_group(batch, results, ms, _settle)


def _settle(fut: asyncio.Future[Any], *, value: Any = None, error: BaseException | None = None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)
