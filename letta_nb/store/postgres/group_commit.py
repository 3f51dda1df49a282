"""The statements of one group commit on PostgreSQL: what PgStepWriter (postgres/step_writer.py) sends for a
group of step writes and lease ops, as functions of an asyncpg connection.

- A group of plain step commits (fences, messages, steps rows) is **one statement** with no BEGIN/COMMIT
  (:data:`_FENCED_STEPS_JSON`, or :data:`_FENCED_STEPS` with the rows as column arrays): it also answers, per
  landed agent, whether a waiter is queued for its lease (leases.landed), the turn's end's question.
- Any other group is one transaction (:func:`transaction`): row locks taken in one global order (agent by
  agent), the fences of a run of agents as one statement, consecutive lease grants of one kind as one
  statement (leases.acquire_many, install_many), then the applied writes' rows batched across them.
- The statements are generated from the migrated tables, so they cannot drift from the schema.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from letta_nb._text import clean_json
from letta_nb.store.backend import Op, StepWrite
from letta_nb.store.migrations import METADATA
from letta_nb.store.postgres import leases
from letta_nb.store.postgres.json_rows import json_insert, pg_type, rows_json
from letta_nb.store.records import tool_calls_value
from letta_nb.store.shared_blocks import rebase

__all__ = ["insert_rows", "jsonb_text", "prepare", "transaction", "warm_up"]

_T = METADATA.tables


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
    writes = [w for w in items if isinstance(w, StepWrite) and _plain_write(w)]
    if len(writes) < len(items) or len({w.agent_id for w in writes}) < len(writes):
        return None
    return writes


def _plain_write(w: StepWrite) -> bool:
    """A fenced write of messages and a step only: what :data:`_FENCED_STEPS` commits."""
    return w.fence is not None and not w.block_values and not w.block_bases and not w.passages


def prepare(write: StepWrite) -> tuple[str, str] | None:
    """A plain write's rows as :data:`_FENCED_STEPS_JSON` takes them (its messages' JSON rows, its step's),
    made when the write is submitted (PgStepWriter.submit): on the runtime loop during the turn, not on the
    group's critical path, where every write waiting for the commit waited for them too (~0.8 ms a group of
    ~18 at 100 agents). None: not a plain write, or rows the JSON cannot carry (the columns' arrays do)."""
    if not _plain_write(write):
        return None
    messages = rows_json(_T["messages"], write.messages)
    if messages is None:
        return None
    steps = rows_json(_T["steps"], [write.step] if write.step is not None else [])
    return None if steps is None else (messages, steps)


def _joined(arrays: list[str]) -> str:
    """JSON arrays (``"[...]"``) as one array of all their elements."""
    return "[" + ",".join(a[1:-1] for a in arrays if a != "[]") + "]"


async def _fenced_steps(conn: Any, writes: list[StepWrite], waiters: dict[str, bool],
                        prepared: dict[int, tuple[str, str] | None] | None = None) -> list[Any]:
    fences = leases.fence_params([_fence_of(w) for w in sorted(writes, key=lambda w: w.agent_id)])
    as_json: tuple[str | None, str | None]
    if prepared is not None and all(id(w) in prepared for w in writes):  # None: JSON cannot carry it
        rows = [prepared[id(w)] for w in writes]
        as_json = (None, None) if None in rows else (_joined([r[0] for r in rows if r]),
                                                     _joined([r[1] for r in rows if r]))
    else:
        as_json = (rows_json(_T["messages"], [m for w in writes for m in w.messages]),
                   rows_json(_T["steps"], [w.step for w in writes if w.step is not None]))
    if as_json[0] is not None and as_json[1] is not None:
        rows = await conn.fetch(_FENCED_STEPS_JSON, *fences, *as_json, time.time())
    else:
        messages = [m for w in writes for m in w.messages]
        steps = [w.step for w in writes if w.step is not None]
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


async def transaction(conn: Any, items: list[StepWrite | Op], waiters: dict[str, bool],
                      prepared: dict[int, tuple[str, str] | None] | None = None) -> list[Any]:
    """One transaction for a group; a result per item (an op's value; for a write, whether it was applied);
    ``waiters``: for each agent whose fenced write landed, whether a waiter was queued for its lease;
    ``prepared``: the writes' rows as :func:`prepare` made them, by ``id(write)``.

    Row locks are taken in one global order, so groups of different processes cannot deadlock: first, agent
    by agent (sorted; each agent's items in submission order), the ops and the writes' fences (lease and agent
    rows); then the applied writes' rows, in the same agent order (the passage trigger's per-agent row).
    """
    plain = _plain(items)
    if plain is not None:
        return await _fenced_steps(conn, plain, waiters, prepared)
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
