"""The PostgreSQL step writer: every row a step produces, committed atomically on a raw asyncpg connection,
with adaptive group commit.

Why raw asyncpg: the same 3-row transaction costs ~0.4-1 ms through asyncpg and ~4 ms through SQLAlchemy's
async engine on this kind of machine (shared/DESIGN.md), so the hot path skips SQLAlchemy; the statements
are still generated from the migrated tables, so they cannot drift from the schema.

Invariants (those of store/sqlite/step_writer.py, on a server):
- A :class:`StepWrite` is applied in one transaction: all there or absent.
- **Adaptive group commit, no timer:** one drain task commits whatever is pending; everything submitted
  while a commit is in flight joins the next one. Alone, a write commits at once; under load, groups grow
  by themselves with the commit latency.
- **Few round trips** (each wakes a server process; on a loaded 2-core host they were most of a step's
  cost): a group of plain step commits (fences, messages, steps) is one statement with no BEGIN/COMMIT
  (:data:`_FENCED_STEPS`: 11 round trips a step became 3 with the lease peeks, postgres/peeks.py, and 2
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
import functools
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from letta_nb._text import clean_json
from letta_nb.store.backend import Op, StepWrite, settle_group
from letta_nb.store.migrations import METADATA
from letta_nb.store.postgres import leases
from letta_nb.store.postgres.json_rows import json_insert, pg_type, rows_json
from letta_nb.store.postgres.peeks import PeekBatcher
from letta_nb.store.records import tool_calls_value
from letta_nb.store.shared_blocks import rebase

__all__ = ["PgStepWriter", "insert_rows", "jsonb_text"]

_T = METADATA.tables
_TRANSIENT = ("40P01", "40001")  # deadlock_detected, serialization_failure: run the transaction again
Item = tuple["StepWrite | Op", "asyncio.Future[Any]"]


def _insert(table: sa.Table) -> tuple[str, tuple[str, ...]]:
    cols = tuple(c.name for c in table.columns)
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks})", cols


_INSERTS = {name: _insert(_T[name]) for name in ("messages", "passages", "steps", "files")}
_CONVERT: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("messages", "tool_calls"): tool_calls_value,  # None for no calls
    ("passages", "tags"): list,
}


def _unnest_insert(table: sa.Table, first: int) -> str:
    """``INSERT INTO table`` of the rows given as one array per column (parameters from ``$first``), keeping
    only those of agents whose fence landed (``ok``, leases.FENCE_CTES). JSONB travels as text (an array of
    JSON values that are lists is not one asyncpg can encode) and is cast back."""
    types = [pg_type(c) for c in table.columns]
    cols = [c.name for c in table.columns]
    arrays = ", ".join(f"${first + k}::{'TEXT' if t == 'JSONB' else t}[]" for k, t in enumerate(types))
    values = ", ".join(f"u.{c}::JSONB" if t == "JSONB" else f"u.{c}" for c, t in zip(cols, types, strict=True))
    return (f"{table.name}_rows AS (INSERT INTO {table.name} ({', '.join(cols)}) SELECT {values} FROM "
            f"unnest({arrays}) AS u ({', '.join(cols)}) WHERE u.agent_id IN (SELECT id FROM ok))")


_NOW = 8 + len(_T["messages"].columns) + len(_T["steps"].columns)  # the parameter of leases.landed
_FENCED_STEPS = (leases.FENCE_CTES + ", " + _unnest_insert(_T["messages"], 8) + ", "
                 + _unnest_insert(_T["steps"], 8 + len(_T["messages"].columns)) + leases.landed(_NOW))
"""A group of plain step commits (fences, messages, steps rows) as one statement: one round trip, no
explicit transaction (a statement is atomic), where BEGIN, fences, two inserts and COMMIT were five. It
answers, per landed agent, whether a waiter is queued (leases.landed), the turn's end's peek folded in."""

_FENCED_STEPS_JSON = (leases.FENCE_CTES + ", " + json_insert(_T["messages"], 8) + ", " + json_insert(_T["steps"], 9)
                      + leases.landed(10))
""":data:`_FENCED_STEPS` with each table's rows as one JSON parameter (postgres/json_rows.py), when they can be."""


def _column_converters(name: str) -> list[tuple[str, Callable[[Any], Any] | None]]:
    _, cols = _INSERTS[name]
    conv = [_CONVERT.get((name, c)) for c in cols]
    return [(c, _as_text(f) if pg_type(_T[name].columns[c]) == "JSONB" else f)
            for c, f in zip(cols, conv, strict=True)]


def _columns(name: str, records: list[Any]) -> list[list[Any]]:
    """``records`` (fields named after table ``name``'s columns) as one list per column (JSONB as text)."""
    return [[f(getattr(r, c)) for r in records] if f else [getattr(r, c) for r in records]
            for c, f in _COLUMN_CONVERTERS[name]]


def _as_text(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def text(value: Any) -> str | None:
        value = convert(value) if convert else value
        return None if value is None else jsonb_text(value)
    return text


def jsonb_text(value: Any) -> str:
    """``value`` as the JSON text jsonb takes (the JSON columns of a group's statement, and backend.py's codec).

    jsonb refuses ``\\u0000`` and a lone surrogate's escape, so such strings are made U+FFFD first (the project's
    policy, letta_nb/_text.py). ``json.dumps`` escapes every non-ASCII character, so either can only be in
    the text as ``\\u0000`` or ``\\ud...``: the value is walked and cleaned only then (an emoji, a surrogate pair
    once escaped, pays a walk for nothing), not for every value: walk and dump took 3.7x the dump alone
    (22 vs 6 us for a turn's tool call, timeit), several values a step on the runtime loop."""
    text = json.dumps(value)
    if "\\u0000" in text or "\\ud" in text:
        return json.dumps(clean_json(value))
    return text


# Compiled once: compiling a column's type for every row batch was 3.4 of a step's ~7 ms of CPU (profiled).
_COLUMN_CONVERTERS = {name: _column_converters(name) for name in ("messages", "steps")}


def _plain(items: list[StepWrite | Op]) -> list[StepWrite] | None:
    """The items as fenced writes of messages and steps only, one per agent (:data:`_FENCED_STEPS`), or None."""
    writes = [w for w in items if isinstance(w, StepWrite) and w.fence is not None and not w.block_values
              and not w.block_bases and not w.passages]
    if len(writes) < len(items) or len({w.agent_id for w in writes}) < len(writes):
        return None
    return writes


async def _fenced_steps(conn: Any, writes: list[StepWrite], waiters: dict[str, bool]) -> list[Any]:
    fences = leases.fence_params([_fence_of(w) for w in sorted(writes, key=lambda w: w.agent_id)])
    messages = [m for w in writes for m in w.messages]
    steps = [w.step for w in writes if w.step is not None]
    as_json = rows_json(_T["messages"], messages), rows_json(_T["steps"], steps)
    if as_json[0] is not None and as_json[1] is not None:
        rows = await conn.fetch(_FENCED_STEPS_JSON, *fences, *as_json, time.time())
    else:
        rows = await conn.fetch(_FENCED_STEPS, *fences, *_columns("messages", messages), *_columns("steps", steps),
                                time.time())
    landed = {r[0]: r[1] for r in rows}
    waiters.update(landed)
    return [w.agent_id in landed for w in writes]


async def warm_up(conn: Any) -> None:
    """Run the writer's hot statements once on a fresh connection, writing nothing: an empty group commit
    (:data:`_FENCED_STEPS_JSON`, prepared with its generic plan) and the lease functions (leases.warm_up). The
    first turns after a store opens then wait for neither the prepares nor plpgsql's compilation."""
    await conn.fetch(_FENCED_STEPS_JSON, *([] for _ in range(7)), "[]", "[]", time.time())
    await leases.warm_up(conn)


async def insert_rows(conn: Any, name: str, records: list[Any]) -> None:
    """``executemany`` an INSERT of ``records`` (fields named after the columns) into table ``name``."""
    if not records:
        return
    sql, cols = _INSERTS[name]
    conv = [_CONVERT.get((name, c)) for c in cols]
    await conn.executemany(sql, [tuple(f(getattr(r, c)) if f else getattr(r, c) for c, f in zip(cols, conv,
                                                                                                strict=True))
                                 for r in records])


def _agent_of(item: StepWrite | Op) -> str:
    """The agent an item locks: a write's, or a lease op's (a ``functools.partial`` naming ``agent_id``,
    runtime/leases.py); "" for anything else."""
    if isinstance(item, StepWrite):
        return item.agent_id
    keywords = getattr(item, "keywords", None)
    return str(keywords.get("agent_id", "")) if isinstance(keywords, dict) else ""


def _fence_of(w: StepWrite) -> leases.Fence:
    token, expected = w.fence or (0, 0)
    return (w.agent_id, token, expected, w.last_seq, w.context_start_seq, w.context_summary, w.lease_until)


async def _rebase(conn: Any, w: StepWrite) -> bool:
    """Rebase a write's edits of shared blocks on their current values; False: refused (shared_blocks.py)."""
    for label, base in w.block_bases.items():
        shared = await conn.fetchval("SELECT shared_id FROM blocks WHERE agent_id = $1 AND label = $2",
                                     w.agent_id, label)
        if shared is not None:  # every edit of its mirrors locks this row first (store/shared_blocks.py)
            await conn.execute("SELECT 1 FROM shared_blocks WHERE id = $1 FOR UPDATE", shared)
        row = await conn.fetchrow("SELECT value, char_limit FROM blocks WHERE agent_id = $1 AND label = $2",
                                  w.agent_id, label)
        value = None if row is None else rebase(base, w.block_values[label], row[0], row[1])
        if value is None:
            return False
        w.block_values[label], w.block_bases[label] = value, row[0]  # a retried group rebases nothing twice
    return True


async def _fence(conn: Any, run: list[tuple[int, StepWrite]], results: list[Any], waiters: dict[str, bool]) -> None:
    """The compare-and-set (on lease token and ``last_seq``, renewing the lease) of the fenced writes of
    ``run`` (``(index, write)``, one per agent), as one statement; ``results[index]``: whether it landed;
    ``waiters[agent_id]`` of a landed one: whether a waiter was queued (leases.landed)."""
    if run:
        landed = await leases.fenced_updates(conn, [_fence_of(w) for _, w in run])
        waiters.update(landed)
        for i, w in run:
            results[i] = w.agent_id in landed


def _many_of(item: functools.partial[Any]) -> Any:
    """For a lease grant op (``functools.partial(leases.acquire or leases.install, agent_id=..., ...)``, as the
    runtime's leases submit them), the function that makes many of its kind in one statement; else None."""
    return leases.MANY.get(item.func) if not item.args else None


async def _grant(conn: Any, grants: list[tuple[int, functools.partial[Any]]], results: list[Any]) -> None:
    """The lease grants of ``grants`` (``(index, op)``, all of one kind, in the group's agent order) as one
    statement (leases.acquire_many, leases.install_many)."""
    if grants:
        many = _many_of(grants[0][1])
        answers = await many(conn, [op.keywords for _, op in grants])
        for (i, _), answer in zip(grants, answers, strict=True):
            results[i] = answer


async def _write_rows(conn: Any, writes: list[StepWrite]) -> None:
    """The rows of applied writes, batched across them (``executemany`` per table)."""
    await insert_rows(conn, "messages", [m for w in writes for m in w.messages])
    await insert_rows(conn, "passages", [p for w in writes for p in w.passages])
    await insert_rows(conn, "steps", [w.step for w in writes if w.step is not None])
    edits = [(value, w.agent_id, label) for w in writes for label, value in w.block_values.items()]
    if edits:
        await conn.executemany("UPDATE blocks SET value = $1 WHERE agent_id = $2 AND label = $3", edits)
    for w in writes:
        if w.fence is None and (values := w.agent_columns()):
            cols = sorted(values)
            sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
            await conn.execute(f"UPDATE agents SET {sets} WHERE id = $1", w.agent_id, *(values[c] for c in cols))


async def _transaction(conn: Any, items: list[StepWrite | Op], waiters: dict[str, bool]) -> list[Any]:
    """One transaction for a group; a result per item (an op's value; for a write, whether it was applied);
    ``waiters``: for each agent whose fenced write landed, whether a waiter was queued for its lease.

    Row locks are taken in one global order, so groups of different processes cannot deadlock: first, agent
    by agent (sorted; each agent's items in submission order), the ops and the writes' fences (lease and agent
    rows); then the applied writes' rows, in the same agent order (the passage trigger's per-agent row).
    """
    plain = _plain(items)
    if plain is not None:
        return await _fenced_steps(conn, plain, waiters)
    results: list[Any] = [None] * len(items)
    order = sorted(range(len(items)), key=lambda i: _agent_of(items[i]))
    async with conn.transaction():
        run: list[tuple[int, StepWrite]] = []  # consecutive fenced writes, one per agent: one statement
        grants: list[tuple[int, functools.partial[Any]]] = []  # consecutive lease grants of one kind: one statement
        for i in order:
            item = items[i]
            if isinstance(item, StepWrite) and item.fence is None:
                results[i] = True
                continue
            if isinstance(item, functools.partial) and _many_of(item) is not None:
                await _fence(conn, run, results, waiters)
                run = []
                if grants and _many_of(grants[-1][1]) is not _many_of(item):
                    await _grant(conn, grants, results)
                    grants = []
                grants.append((i, item))
                continue
            await _grant(conn, grants, results)
            grants = []
            fresh = not run or run[-1][1].agent_id != _agent_of(item)
            if isinstance(item, StepWrite) and not item.block_bases and fresh:
                run.append((i, item))
                continue
            await _fence(conn, run, results, waiters)
            run = []
            if isinstance(item, StepWrite):
                if await _rebase(conn, item):
                    run = [(i, item)]  # fenced with whatever follows it
                else:
                    results[i] = False
            else:
                value = item(conn)
                results[i] = await value if inspect.isawaitable(value) else value
        await _grant(conn, grants, results)  # at most one of these two is left
        await _fence(conn, run, results, waiters)
        await _write_rows(conn, [w for i in order if isinstance(w := items[i], StepWrite) and results[i]])
    return results


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

    def warm(self) -> None:
        """Open the writer's connection and the peek batcher's now, in the background, and run their hot
        statements once (:func:`warm_up`, postgres/peeks.py): opened lazily, a hundred agents' first turns after
        the store opened waited ~35 ms for them (``bench concurrency --backend postgres``, issue 12). A commit
        that comes meanwhile waits for the warm-up; one that failed is dropped (the commit opens its own)."""
        loop = asyncio.get_running_loop()
        self._warming = loop.create_task(self._warm())
        self.peeks.warm()

    async def _warm(self) -> None:
        try:
            self._conn = await self._connect()
            await warm_up(self._conn)
        except BaseException as e:
            if self._conn is not None:
                self._conn.terminate()
                self._conn = None
            if not isinstance(e, Exception):
                raise

    def submit(self, write: StepWrite | Op) -> asyncio.Future[Any]:
        """Queue a write (or an op, a function of the asyncpg connection, sync or async); the future resolves
        once its group committed: to the commit's ms (an op: to its value); StaleCommitError if refused."""
        if self._closed:
            raise RuntimeError("the step writer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
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
                raise

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
        """:func:`_transaction`, again when the server aborted it as a deadlock victim or a serialization
        failure (the groups lock in one order, so only other writers, e.g. a cascade, can cause one). Keeps
        what its fences said of waiters for :meth:`waiters`."""
        for attempt in range(attempts):
            waiters: dict[str, bool] = {}
            try:
                results = await _transaction(await self._connection(), items, waiters)
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
