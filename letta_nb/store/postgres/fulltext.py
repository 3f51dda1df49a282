"""PostgreSQL full-text search: generated ``tsvector`` columns with GIN indexes, ranked by ``ts_rank``.

A ``STORED`` generated column is computed by the server in the row's own statement, so the index can never
disagree with the row, whatever wrote it (the asyncpg step writer, COPY uploads, SQLAlchemy); adding the
column computes it for the rows already there. The ``english`` configuration stems like SQLite's porter
tokenizer, so both backends match "paging" to "pages"; terms are weighted by their rarity as BM25 does (see
:func:`_search`). See store/fulltext.py for the shared semantics.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from letta_nb.store.fulltext import TextQuery

__all__ = ["DDL", "search_messages", "search_passages"]

DDL = (
    "ALTER TABLE passages ADD COLUMN IF NOT EXISTS text_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX IF NOT EXISTS ix_passages_text_tsv ON passages USING gin (text_tsv)",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS body_tsv tsvector GENERATED ALWAYS AS "
    "(to_tsvector('english'::regconfig, coalesce(content, '') || ' ' || coalesce(tool_calls::text, ''))) STORED",
    "CREATE INDEX IF NOT EXISTS ix_messages_body_tsv ON messages USING gin (body_tsv)",
)


def _filters(query: TextQuery, row: str, sql: list[str], params: dict[str, Any]) -> None:
    if query.start is not None:
        sql.append(f"AND {row}.created_at >= :start")
        params["start"] = query.start
    if query.end is not None:
        sql.append(f"AND {row}.created_at < :end")
        params["end"] = query.end
    if query.tags:
        fn = "jsonb_exists_all" if query.tag_match_mode == "all" else "jsonb_exists_any"
        sql.append(f"AND {fn}({row}.tags, CAST(:tags AS text[]))")
        params["tags"] = list(query.tags)
    if query.roles:
        sql.append(f"AND {row}.role = ANY(CAST(:roles AS text[]))")
        params["roles"] = list(query.roles)


def _search(conn: sa.Connection, query: TextQuery, table: str, column: str, order: str) -> list[tuple[str, float]]:
    """BM25-like: ``ts_rank`` weighs a term by its frequency in the row but not by its rarity in the agent (a
    word in every message ranks like a name said once), so each term's ``ts_rank`` is weighted by its BM25
    IDF over the agent's rows, counted first through the GIN index."""
    alias = table[0]
    terms = {f"t{i}": t for i, t in enumerate(query.terms)}
    counts = ", ".join([f"(SELECT count(*) FROM {table} WHERE agent_id = :agent)"] + [
        f"(SELECT count(*) FROM {table} WHERE agent_id = :agent AND {column} @@ to_tsquery('english'::regconfig, "
        f":{key}))" for key in terms])
    n, *df = conn.execute(sa.text(f"SELECT {counts}"), {"agent": query.agent_id, **terms}).one()
    weights = {f"w{i}": math.log(1 + (n - d + 0.5) / (d + 0.5)) for i, d in enumerate(df)}
    score = " + ".join(f":w{i} * ts_rank({alias}.{column}, to_tsquery('english'::regconfig, :t{i}))"
                       for i in range(len(terms)))
    sql = [f"SELECT {alias}.id, {score} AS score FROM {table} {alias} WHERE {alias}.agent_id = :agent "
           f"AND {alias}.{column} @@ to_tsquery('english'::regconfig, :match)"]
    params: dict[str, Any] = {"match": " | ".join(query.terms), "agent": query.agent_id, "limit": query.limit,
                              **terms, **weights}
    _filters(query, alias, sql, params)
    sql.append(f"ORDER BY score DESC, {order} LIMIT :limit")
    return [(r[0], float(r[1])) for r in conn.execute(sa.text(" ".join(sql)), params)]


def search_passages(conn: sa.Connection, query: TextQuery) -> list[tuple[str, float]]:
    return _search(conn, query, "passages", "text_tsv", "p.pseq")


def search_messages(conn: sa.Connection, query: TextQuery) -> list[tuple[str, float]]:
    return _search(conn, query, "messages", "body_tsv", "m.seq DESC")
