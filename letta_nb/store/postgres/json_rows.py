"""A group's message and step rows as one JSON parameter per table, for the step writer's one statement.

Why: sent as one array per column (``unnest``), every value of every row is an array element that asyncpg
checks with ``isinstance(value, collections.abc.Iterable)`` and friends in Python (~170 ABC checks a turn's
commit, ~60-90 us of a ~650-870 us turn on the runtime loop, profiled on ``bench step --backend
postgres``); as one JSON text per table (an array of rows, each an array of its column values), it is one
C-level ``json.dumps`` and one text parameter, and the server casts each value with its column type's input
function, as the columns' arrays were cast (the same types, so the same truncation or refusal).

Only when the text is plainly safe: jsonb refuses ``\\u0000`` and a lone surrogate's escape, and JSON has
no NaN or Infinity. Since ``json.dumps`` escapes every non-ASCII character, any of those shows in the text
(an emoji's surrogate pair too): then :func:`rows_json` says None and the writer sends the columns' arrays,
whose JSON values are cleaned by the project's policy (group_commit.jsonb_text). So every row is stored as
the arrays stored it.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from letta_nb.store.records import tool_calls_value

__all__ = ["json_insert", "pg_type", "rows_json"]

_UTC = dt.timezone.utc


def pg_type(column: sa.Column[Any]) -> str:
    """A column's type as PostgreSQL spells it (what a statement casts its values to)."""
    return str(column.type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def json_insert(table: sa.Table, param: int) -> str:
    """``INSERT INTO table`` of the rows in ``$param`` (:func:`rows_json`), keeping only those of agents whose
    fence landed (``ok``, leases.FENCE_CTES): a common table expression of the step writer's statement."""
    cols = [c.name for c in table.columns]
    values = ", ".join(_value(k, pg_type(c)) for k, c in enumerate(table.columns))
    agent = cols.index("agent_id")
    return (f"{table.name}_rows AS (INSERT INTO {table.name} ({', '.join(cols)}) SELECT {values} FROM "
            f"jsonb_array_elements(${param}::text::jsonb) AS r WHERE r->>{agent} IN (SELECT id FROM ok))")


def _value(k: int, type_: str) -> str:
    """Column ``k`` of a JSON row as a value of ``type_``."""
    if type_ == "JSONB":
        return f"nullif(r->{k}, 'null'::jsonb)"
    if type_ == "TIMESTAMP WITH TIME ZONE":  # microseconds since the epoch (:func:`_timestamp`)
        return f"(timestamptz 'epoch' + (r->>{k})::bigint * interval '1 microsecond')"
    return f"(r->>{k})::{type_}"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _timestamp(value: Any) -> Any:
    """A datetime as microseconds since the epoch, exactly (a naive one taken as local time, as asyncpg
    takes it for a ``timestamptz``); a third of the cost of its ISO text."""
    if not isinstance(value, dt.datetime):
        return value
    return ((value if value.tzinfo is not None else value.astimezone(_UTC)) - _EPOCH) // _MICROSECOND


def _fixes(table: sa.Table) -> list[tuple[int, Callable[[Any], Any]]]:
    """``(column index, conversion)`` for the columns whose values are not JSON as they are."""
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for k, c in enumerate(table.columns):
        if c.name == "tool_calls":
            fixes.append((k, tool_calls_value))  # None for no calls
        elif pg_type(c) == "TIMESTAMP WITH TIME ZONE":
            fixes.append((k, _timestamp))
    return fixes


class _Rows:
    """How a record of one table becomes its JSON row."""

    def __init__(self, table: sa.Table):
        self.get = operator.attrgetter(*(c.name for c in table.columns))
        self.fixes = _fixes(table)

    def row(self, record: Any) -> list[Any]:
        row = list(self.get(record))
        for k, fix in self.fixes:
            row[k] = fix(row[k])
        return row


_TABLES: dict[str, _Rows] = {}


def rows_json(table: sa.Table, records: list[Any]) -> str | None:
    """``records`` (fields named after ``table``'s columns) as one JSON array of rows, or None where the text
    would not be stored as the columns' arrays store it (see the module docstring)."""
    rows = _TABLES.get(table.name)
    if rows is None:
        rows = _TABLES[table.name] = _Rows(table)
    try:
        text = json.dumps([rows.row(r) for r in records])
    except (TypeError, ValueError):  # a value JSON cannot carry: the arrays take it as before
        return None
    if "\\u0000" in text or "\\ud" in text or "NaN" in text or "Infinity" in text:
        return None
    return text
