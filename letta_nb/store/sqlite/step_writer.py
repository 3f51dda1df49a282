"""The step writer: every row a step produces is committed atomically, many steps per commit.

Why not the async engine: on this project's reference machine a small transaction (BEGIN, 3 message
inserts, 1 update, COMMIT) costs 2.15 ms p50 through SQLAlchemy's async engine over aiosqlite (each
statement is a greenlet switch plus a thread hop), 0.35 ms as one hop to a thread running SQLAlchemy
Core synchronously, and ~0.1 ms as prepared ``executemany`` on a DB-API cursor. A thread also costs
more than it saves under load: with a hundred agents stepping, the writer thread and the runtime loop
fight over the GIL and commits queue behind the switch interval. So groups are committed inline on the
runtime loop (a WAL commit with synchronous=NORMAL does not fsync), with a zero busy timeout; only when
another process holds the write lock does a group move to a thread that waits for it. Statements are
generated from the migrated tables, so they cannot drift from the schema.

Invariants:
- A :class:`StepWrite` (messages, block edits, passages, the step record, the agent's sequence/context
  pointers) is applied in one transaction: after a crash a step is either all there or absent.
- Writes submitted in the same loop iteration are committed in one transaction (group commit), so a
  hundred agents stepping at once cost a handful of commits, not a hundred.
- If a group fails (say one step violates the per-agent sequence), each write is retried alone so only
  the offending one fails.
- A write that was submitted is committed even if its submitter is cancelled: callers wait on the
  future under ``asyncio.shield`` and reconcile, so Ctrl-C never leaves memory and store disagreeing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from letta_nb._mailbox import mailbox
from letta_nb.store.backend import Op, StepWrite, settle_group
from letta_nb.store.migrations import METADATA
from letta_nb.store.records import tool_calls_value
from letta_nb.store.shared_blocks import rebase
from letta_nb.store.sqlite import fulltext, leases
from letta_nb.store.sqlite.checkpointer import Checkpointer
from letta_nb.store.sqlite.driver import write_transaction

__all__ = ["StepWriter", "apply_writes", "insert_rows", "is_busy"]

_T = METADATA.tables
_UTC = dt.timezone.utc
_ANY = ""  # the mark of an op that names no agent: it may have changed any agent's rows
# Ops that name no agent yet write no agent or lease row, so they leave every stamp alone: the message index's
# catch-up (one every 256 messages) otherwise sent every kept lease of the process back to a read.
_NO_AGENT_ROWS: tuple[Callable[[Any], Any], ...] = (fulltext.catch_up,)


def _insert_sql(table: sa.Table) -> tuple[str, tuple[str, ...]]:
    cols = tuple(c.name for c in table.columns)
    return f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", cols


_LAST_SECOND: list[tuple[tuple[int, ...], str]] = [((), "")]  # one tuple, swapped whole (the writer thread)


def _sql_time(v: Any) -> str | None:
    # DT_FORMAT's text, 2.5x faster than strftime (four a step): isoformat's first 26 characters are
    # "YYYY-MM-DD HH:MM:SS.ffffff" for naive and aware times alike (an aware one's offset is cut; all are UTC).
    # A UTC time (utcnow()) in the second last formatted reuses that text up to the seconds (1.04 -> 0.37 us).
    if v is not None and v.tzinfo is _UTC:
        last, second = _LAST_SECOND[0], (v.second, v.minute, v.hour, v.day, v.month, v.year)
        if second != last[0]:
            last = _LAST_SECOND[0] = (second, v.isoformat(" ", "seconds")[:19] + ".")
        return last[1] + "%06d" % v.microsecond  # noqa: UP031 - printf is the fastest here
    return v.isoformat(" ", "microseconds")[:26] if v is not None else None


def _converters(table: sa.Table) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(column index, converter) of the columns whose Python value is not what SQLite binds."""
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for i, c in enumerate(table.columns):
        if c.name == "tool_calls" and table.name == "messages":
            # A Message holds its tool calls as ToolCall objects; the column holds their JSON (store/records.py).
            out.append((i, lambda calls: json.dumps(tool_calls_value(calls)) if calls else None))
        elif isinstance(c.type, sa.DateTime):
            out.append((i, _sql_time))
        elif isinstance(c.type, sa.JSON):
            out.append((i, lambda v: json.dumps(v) if v is not None else None))
    return tuple(out)


def _row_builder(table: sa.Table) -> Callable[[list[Any]], list[tuple[Any, ...]]]:
    """``records -> rows`` for ``table``, compiled once from its columns (as namedtuple and dataclasses build
    their methods): one tuple display per record with its converters inlined. Measured on a step's three
    messages: half the time of attrgetter + a list per row + a loop over the converters (~16 -> ~8 us)."""
    conv = dict(_converters(table))
    env: dict[str, Any] = {f"c{i}": fn for i, fn in conv.items()}
    cells = []
    for i, c in enumerate(table.columns):
        if not c.name.isidentifier():  # names come from the migrated tables; refuse anything else
            raise ValueError(f"column {table.name}.{c.name} is not an identifier")
        cells.append(f"c{i}(r.{c.name})" if i in conv else f"r.{c.name}")
    build: Callable[[list[Any]], list[tuple[Any, ...]]] = eval(  # noqa: S307 - text built from the schema
        f"lambda records: [({', '.join(cells)},) for r in records]", env)
    return build


def _insert(name: str) -> tuple[str, Callable[[list[Any]], list[tuple[Any, ...]]]]:
    return _insert_sql(_T[name])[0], _row_builder(_T[name])


_INSERTS = {name: _insert(name) for name in ("messages", "passages", "steps", "files")}


# Tables whose inserts feed an FTS5 index by trigger (store/sqlite/fulltext.py). FTS5 writes its pending terms
# to disk at every statement savepoint, so ``executemany`` (one statement a row) wrote a segment per message;
# a multi-row INSERT writes one per statement (measured: 3 messages + COMMIT 121 -> 102 us p50). Row counts
# are cut into a few fixed sizes, so the statement cache holds a dozen texts, not one per group size.
_FTS_TABLES = frozenset({"messages", "passages"})
_CHUNKS = (128, 64, 32, 16, 8, 7, 6, 5, 4, 3, 2, 1)
_MULTI: dict[tuple[str, int], str] = {}


def insert_rows(cursor: Any, name: str, records: list[Any]) -> None:
    """INSERT ``records`` (store/records.py: fields named after the columns) into table ``name``, in the
    caller's transaction: ``executemany``, or a few multi-row statements for an indexed table."""
    if not records:
        return
    sql, rows = _rows(name, records)
    if name not in _FTS_TABLES or len(rows) == 1:
        cursor.executemany(sql, rows)
        return
    i = 0
    while i < len(rows):
        k = next(c for c in _CHUNKS if c <= len(rows) - i)
        cursor.execute(_multi_sql(name, sql, k), [v for row in rows[i:i + k] for v in row])
        i += k


def _multi_sql(name: str, sql: str, k: int) -> str:
    text = _MULTI.get((name, k))
    if text is None:
        head, _, values = sql.partition(" VALUES ")
        text = _MULTI[(name, k)] = head + " VALUES " + ", ".join([values] * k)
    return text


def _rows(name: str, records: list[Any]) -> tuple[str, list[tuple[Any, ...]]]:
    # Attributes are bound straight into the statement: no dict per row on the step path (_row_builder).
    sql, build = _INSERTS[name]
    return sql, build(records)


def apply_writes(cursor: Any, writes: list[StepWrite],
                 waiters: dict[str, tuple[int, bool]] | None = None) -> list[bool]:
    """Apply writes with a DB-API cursor inside the caller's transaction, batched across writes; returns
    which were applied. A fenced write whose lease or ``last_seq`` no longer holds is refused before any of
    its rows is written, and the rest of the group goes on. ``waiters``: for each fenced write that landed,
    ``agent_id -> (token, whether a waiter is queued for its lease)`` (leases.fenced_update).

    Statements are built once from the migrated tables (so they track the schema) and executed on the
    DB-API cursor (:func:`insert_rows`): SQLAlchemy Core per statement cost ~5x the SQLite work itself here.
    """
    applied = [True] * len(writes)
    now = time.time()
    for i, w in enumerate(writes):
        if w.fence is None:
            continue
        if not _rebased(cursor, w):
            applied[i] = False  # a shared block another agent edited since the step read it: redo the step
            continue
        waiting = leases.fenced_update(cursor, w.agent_id, w.fence[0], w.fence[1],
                                       w.agent_columns() or {"last_seq": w.fence[1]}, now)
        if waiting is None:
            applied[i] = False
            continue
        if waiters is not None:
            waiters[w.agent_id] = (w.fence[0], waiting)
        if w.lease_until is not None:
            leases.renew(cursor, w.agent_id, w.fence[0], w.lease_until)
    if not all(applied):
        writes = [w for w, ok in zip(writes, applied, strict=True) if ok]
    insert_rows(cursor, "messages", [m for w in writes for m in w.messages])
    insert_rows(cursor, "passages", [p for w in writes for p in w.passages])
    insert_rows(cursor, "steps", [w.step for w in writes if w.step is not None])
    edits = [(value, w.agent_id, label) for w in writes for label, value in w.block_values.items()]
    if edits:
        cursor.executemany("UPDATE blocks SET value = ? WHERE agent_id = ? AND label = ?", edits)
    for w in writes:
        if w.fence is None and (values := w.agent_columns()):
            cols = sorted(values)
            cursor.execute(
                f"UPDATE agents SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                [*(values[c] for c in cols), w.agent_id],
            )
    return applied


def _rebased(cursor: Any, w: StepWrite) -> bool:
    """The compare-and-set of a step's block edits: each lands on the block's value now, rebased if another
    agent edited a shared block meanwhile (store/shared_blocks.py); False: a conflict, refuse the step."""
    for label, base in w.block_bases.items():
        row = cursor.execute("SELECT value, char_limit FROM blocks WHERE agent_id = ? AND label = ?",
                             (w.agent_id, label)).fetchone()
        value = None if row is None else rebase(base, w.block_values[label], row[0], row[1])
        if value is None:
            return False
        w.block_values[label], w.block_bases[label] = value, row[0]  # a retried group rebases nothing twice
    return True


class StepWriter:
    """Commits step writes in groups: inline on the runtime loop, or on a thread when the file is busy.

    ``connect(busy_timeout_ms)`` opens a DB-API connection. The inline connection has a zero busy
    timeout, so a commit either takes the write lock at once (the common case, ~0.1 ms) or hands the
    group to the writer thread, whose connection waits out another process's lock without blocking
    the loop. Must be used from one event loop (the runtime's).
    """

    def __init__(self, connect: Callable[[int], Any], *, busy_timeout_ms: int = 10_000,
                 checkpointer: Checkpointer | None = None):
        self._connect = connect
        self.checkpointer = checkpointer  # set: ``connect`` turned automatic checkpoints off
        self._busy_timeout_ms = busy_timeout_ms
        self._inline: Any = None
        self._pending: list[tuple[StepWrite | Op, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self._queue: queue.SimpleQueue[list[tuple[StepWrite | Op, asyncio.Future[Any]]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0
        self.deferred = 0  # groups handed to the thread because the database was locked
        self.refused = 0  # fenced writes refused: their lease was lost (store/sqlite/leases.py)
        # The lease gate's marks (see stamp): a number drawn for each committed op or unfenced write, kept per
        # agent it names (_ANY: an op that names none). itertools.count: next() is atomic under the GIL.
        self._marks: dict[str, int] = {}
        self._mark = itertools.count(1)
        self._dv: Any = None  # a cursor kept on the inline connection for PRAGMA data_version
        # agent -> (token, whether a waiter was queued) as the agent's last landed fence read it (see waiters)
        self._waiters: dict[str, tuple[int, bool]] = {}

    def submit(self, write: StepWrite | Op) -> asyncio.Future[Any]:
        """Queue a write (or an :data:`Op`); the future resolves, once the group is durable, to the commit's
        duration in ms (an op: to its value). A fenced write that was refused fails with StaleCommitError."""
        if self._closed:
            raise RuntimeError("the step writer is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((write, fut))
        if not self._flush_scheduled:
            # Everything submitted before this callback runs joins the same transaction.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:  # submitted but not flushed: commit them now rather than lose them
            self._flush()
        if self._dv is not None:
            self._dv.close()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
        if self._inline is not None:
            self._inline.close()
        if self.checkpointer is not None:
            self.checkpointer.close()

    def read(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read-only ``fn(cursor)`` on the inline connection, now, on the loop (~20 us: the coherence
        checks of runtime/leases.py are one indexed row each)."""
        if self._inline is None:
            self._inline = self._connect(0)
        cursor = self._inline.cursor()
        try:
            return fn(cursor)
        finally:
            cursor.close()

    def waiters(self, agent_id: str, token: int) -> bool | None:
        """Whether a waiter was queued for the agent's lease when its last fenced commit under ``token`` landed
        (read by that commit's fence under the write lock, leases.fenced_update); None: no such commit since
        this was last asked. Each answer is given once: runtime/leases.py ``done`` asks at the end of the turn
        that made the commit, and so reads nothing (PostgreSQL's writer answers the same)."""
        seen = self._waiters.pop(agent_id, None)
        return seen[1] if seen is not None and seen[0] == token else None

    def stamp(self, agent_id: str) -> tuple[int, int, int]:
        """A value that changes whenever ``agent_id``'s lease and agent rows may have changed since it was
        taken, read on the inline connection (~3 us; a peek is ~20): ``PRAGMA data_version``, which changes
        only when another connection (another process, the async engine, this writer's thread, the uploads)
        commits, and the marks of the ops and unfenced writes this writer committed on the agent or on no
        named agent. Fenced step writes of the lease holder are not marked: the holder knows what they
        change (runtime/leases.py). Take it *before* reading the rows it vouches for."""
        if self._dv is None:
            if self._inline is None:
                self._inline = self._connect(0)
            self._dv = self._inline.cursor()
        return self._dv.execute("PRAGMA data_version").fetchone()[0], self._marks.get(agent_id, 0), \
            self._marks.get(_ANY, 0)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._inline is None:
            self._inline = self._connect(0)
        t0 = time.perf_counter()
        try:
            results = _transaction(self._inline, [w for w, _ in batch], self._waiters)
        except Exception as e:
            if is_busy(e):
                self.deferred += 1
                self._to_thread(batch)
            else:
                self._isolate(self._inline, batch, e)
            return
        self._done(batch, results, (time.perf_counter() - t0) * 1000)

    def _to_thread(self, batch: list[tuple[StepWrite | Op, asyncio.Future[Any]]]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="letta_nb-step-writer", daemon=True)
            self._thread.start()
        self._queue.put(batch)

    def _run(self) -> None:
        conn = self._connect(self._busy_timeout_ms)
        try:
            while (batch := self._queue.get()) is not None:
                t0 = time.perf_counter()
                try:
                    results = _transaction(conn, [w for w, _ in batch], self._waiters)
                except Exception as e:
                    self._isolate(conn, batch, e)
                else:
                    self._done(batch, results, (time.perf_counter() - t0) * 1000)
        finally:
            conn.close()

    def _isolate(self, conn: Any, batch: list[tuple[StepWrite | Op, asyncio.Future[Any]]], error: Exception) -> None:
        """A group failed: retry each item alone so only the offending ones fail."""
        if len(batch) == 1:
            _resolve(batch[0][1], error=error)
            return
        for item, fut in batch:
            t1 = time.perf_counter()
            try:
                results = _transaction(conn, [item], self._waiters)
            except Exception as e:
                _resolve(fut, error=e)
            else:
                self._done([(item, fut)], results, (time.perf_counter() - t1) * 1000)

    def _done(self, batch: list[tuple[StepWrite | Op, asyncio.Future[Any]]], results: list[Any], ms: float) -> None:
        self.commits += 1
        self.writes += len(batch)
        for item, _ in batch:  # ops and unfenced writes: the lease gate must not trust a row they changed
            if not isinstance(item, StepWrite):
                if item in _NO_AGENT_ROWS:
                    continue
                keywords = getattr(item, "keywords", None)  # a lease op is a partial naming its agent
                agent = keywords.get("agent_id") if isinstance(keywords, dict) else None
                self._marks[agent if isinstance(agent, str) else _ANY] = next(self._mark)
            elif item.fence is None:
                self._marks[item.agent_id] = next(self._mark)
        if self.checkpointer is not None:
            self.checkpointer.wrote(sum(len(w.messages) + len(w.passages) + 1 for w, _ in batch
                                        if isinstance(w, StepWrite)))
        self.refused += settle_group(batch, results, ms, _resolve)


def is_busy(error: Exception) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _transaction(conn: Any, items: list[StepWrite | Op], waiters: dict[str, tuple[int, bool]]) -> list[Any]:
    """One transaction for a group: its ops in order, then its writes batched; a result per item (an op's
    value; for a write, whether it was applied). ``waiters`` gets what the landed fences read once the group is
    committed (a rolled-back group's reads vouch for nothing)."""
    results: list[Any] = [None] * len(items)
    writes = [(i, w) for i, w in enumerate(items) if isinstance(w, StepWrite)]
    seen: dict[str, tuple[int, bool]] = {}
    with write_transaction(conn) as cursor:
        for i, item in enumerate(items):
            if not isinstance(item, StepWrite):
                results[i] = item(cursor)
        if writes:
            for (i, _), ok in zip(writes, apply_writes(cursor, [w for _, w in writes], seen), strict=True):
                results[i] = ok
    waiters.update(seen)
    return results


def _resolve(fut: asyncio.Future[Any], *, value: float | None = None, error: BaseException | None = None) -> None:
    """Settle a future from any thread (directly when already on its loop)."""

    def setter() -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    loop = fut.get_loop()
    try:
        if _on_loop(loop):
            setter()
        else:
            mailbox(loop).post(setter)
    except RuntimeError:  # the loop is closed; nobody is waiting any more
        pass


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
