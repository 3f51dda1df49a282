"""SQLite full-text search: FTS5 indexes ranked by BM25 (see store/fulltext.py).

- ``passages_fts``: an external-content FTS5 table over ``passages.text`` (rowid = the passage's rowid), kept
  by triggers in the row's own transaction;
- ``messages_fts``: a contentless FTS5 table over a message's content and tool calls (send_message's text
  lives in its arguments), rowid = the message's rowid, indexed *later, in batches* (:func:`catch_up`).

Triggers, unlike the vec0 tables' (store/sqlite/vectors.py), are safe here: FTS5 is compiled into the
SQLite of every stdlib ``sqlite3`` and pysqlite3 build letta_nb runs on, so any connection that can write a
passage or a message (the step writer, the file writer, the SQLAlchemy engine, a user's ``sqlite3.connect``)
can run their bodies, inside its own transaction. Deleting a row hands FTS5 the text it indexed
(``'delete'`` command), which the triggers recompute from ``old``. The porter stemmer lets "paging" match
"pages"; ``bm25()`` is lower-is-better, returned negated.

Messages are deferred (migration m0011, issue 19): an insert trigger made FTS5 write a segment at every step
commit, ~120 of a step transaction's ~295 us. Invariant: the messages with ``rowid <= fulltext_watermark.upto``
are exactly the indexed ones. :func:`catch_up` indexes the rows above the mark and moves it in ONE write
transaction (a crash leaves both as they were; the write lock keeps two processes from indexing a row twice);
it runs before every message search (exact results) and from the step path every :data:`BATCH` messages. New
rows always land above the mark: SQLite gives a new row ``max(rowid) + 1`` (sqlite.org/autoinc.html), and the
delete trigger lowers the mark to the new ``max(rowid)`` when the largest rowids go, so a reused rowid is never
taken for indexed. Delete and update triggers touch only indexed rows; an unindexed row is indexed as it is
when its turn comes. (At rowid 2**63-1 SQLite picks rowids at random: not reachable by appending messages.)

Rowids: nothing in letta_nb runs VACUUM (which may renumber rowids of tables without an INTEGER PRIMARY
KEY); after a manual one, ``INSERT INTO passages_fts(passages_fts) VALUES('rebuild')`` reindexes passages, and
``INSERT INTO messages_fts(messages_fts) VALUES('delete-all'); UPDATE fulltext_watermark SET upto = 0`` has
messages reindexed by the next search.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from letta_nb.store.fulltext import TextQuery

__all__ = ["BATCH", "DDL", "DEFERRED_DDL", "backlog", "catch_up", "search_messages", "search_passages"]

TOKENIZE = "porter unicode61 remove_diacritics 2"


def _body(row: str) -> str:
    """What a message row indexes (the same expression on insert and delete, as FTS5 requires)."""
    return f"coalesce({row}.content, '') || ' ' || coalesce({row}.tool_calls, '')"


DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(text, content='passages', content_rowid='rowid', "
    f"tokenize='{TOKENIZE}')",
    "CREATE TRIGGER IF NOT EXISTS passages_fts_ai AFTER INSERT ON passages BEGIN "
    "INSERT INTO passages_fts (rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS passages_fts_ad AFTER DELETE ON passages BEGIN "
    "INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS passages_fts_au AFTER UPDATE OF text ON passages BEGIN "
    "INSERT INTO passages_fts (passages_fts, rowid, text) VALUES ('delete', old.rowid, old.text); "
    "INSERT INTO passages_fts (rowid, text) VALUES (new.rowid, new.text); END",
    "INSERT INTO passages_fts (passages_fts) VALUES ('rebuild')",  # the rows already there
    f"CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(body, content='', tokenize='{TOKENIZE}')",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ai AFTER INSERT ON messages BEGIN "
    f"INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, {_body('new')}); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_ad AFTER DELETE ON messages BEGIN "
    f"INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, {_body('old')}); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_au AFTER UPDATE OF content, tool_calls ON messages BEGIN "
    f"INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, {_body('old')}); "
    f"INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, {_body('new')}); END",
    f"INSERT INTO messages_fts (rowid, body) SELECT rowid, {_body('messages')} FROM messages",
)

# Migration m0011: messages indexed in batches (see the module docstring). ``DDL`` above stays m0009's as released.
_UPTO = "(SELECT upto FROM fulltext_watermark)"
_TOP = "(SELECT coalesce(max(rowid), 0) FROM messages)"
DEFERRED_DDL = (
    "DROP TRIGGER IF EXISTS messages_fts_ai",
    "DROP TRIGGER IF EXISTS messages_fts_ad",
    "DROP TRIGGER IF EXISTS messages_fts_au",
    "CREATE TABLE fulltext_watermark (id INTEGER PRIMARY KEY CHECK (id = 1), upto INTEGER NOT NULL)",
    f"INSERT INTO fulltext_watermark (id, upto) VALUES (1, {_TOP})",  # m0009's trigger indexed every row
    f"CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages WHEN old.rowid <= {_UPTO} BEGIN "
    f"INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, {_body('old')}); "
    f"UPDATE fulltext_watermark SET upto = {_TOP} WHERE upto > {_TOP}; END",
    f"CREATE TRIGGER messages_fts_au AFTER UPDATE OF content, tool_calls ON messages WHEN old.rowid <= {_UPTO} "
    f"BEGIN INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, {_body('old')}); "
    f"INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, {_body('new')}); END",
)

# Messages a process commits before it indexes them from the step path: one FTS5 segment for 256 messages
# instead of one a step, and a search never has more than about this many per process to index first.
BATCH = 256


def backlog(cursor: Any) -> bool:
    """Whether some message is not indexed yet (a read: ~20 us, no lock)."""
    row = cursor.execute(f"SELECT {_TOP} > {_UPTO}").fetchone()
    return bool(row[0])


def catch_up(cursor: Any) -> int:
    """Index the messages above the watermark and move it, in the caller's write transaction (a step writer
    op); returns how many were indexed. Reads the mark inside the transaction: run twice, it indexes nothing
    the second time."""
    upto, top = cursor.execute(f"SELECT {_UPTO}, {_TOP}").fetchone()
    if top <= upto:
        return 0
    cursor.execute(f"INSERT INTO messages_fts (rowid, body) SELECT rowid, {_body('messages')} FROM messages "
                   "WHERE rowid > ? AND rowid <= ?", (upto, top))
    indexed = int(cursor.rowcount)
    cursor.execute("UPDATE fulltext_watermark SET upto = ?", (top,))
    return indexed


def _match(terms: tuple[str, ...]) -> str:
    return " OR ".join(f'"{t}"' for t in terms)  # terms are \w+ words: no quote can appear inside


def _filters(query: TextQuery, row: str, sql: list[str], params: dict[str, Any]) -> None:
    if query.start is not None:
        sql.append(f"AND {row}.created_at >= :start")
        params["start"] = query.start_text
    if query.end is not None:
        sql.append(f"AND {row}.created_at < :end")
        params["end"] = query.end_text
    if query.tags:
        marks = ", ".join(f":tag{i}" for i in range(len(query.tags)))
        params.update({f"tag{i}": t for i, t in enumerate(query.tags)})
        inner = f"SELECT count(DISTINCT t.value) FROM json_each({row}.tags) t WHERE t.value IN ({marks})"
        sql.append(f"AND ({inner}) = {len(query.tags)}" if query.tag_match_mode == "all" else f"AND ({inner}) > 0")
    if query.roles:
        marks = ", ".join(f":role{i}" for i in range(len(query.roles)))
        params.update({f"role{i}": r for i, r in enumerate(query.roles)})
        sql.append(f"AND {row}.role IN ({marks})")


def search_passages(conn: sa.Connection, query: TextQuery) -> list[tuple[str, float]]:
    sql = ["SELECT p.id, bm25(passages_fts) FROM passages_fts JOIN passages p ON p.rowid = passages_fts.rowid "
           "WHERE passages_fts MATCH :match AND p.agent_id = :agent"]
    params: dict[str, Any] = {"match": _match(query.terms), "agent": query.agent_id, "limit": query.limit}
    _filters(query, "p", sql, params)
    sql.append("ORDER BY 2, p.rowid LIMIT :limit")
    return [(r[0], -float(r[1])) for r in conn.execute(sa.text(" ".join(sql)), params)]


def search_messages(conn: sa.Connection, query: TextQuery) -> list[tuple[str, float]]:
    sql = ["SELECT m.id, bm25(messages_fts) FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid "
           "WHERE messages_fts MATCH :match AND m.agent_id = :agent"]
    params: dict[str, Any] = {"match": _match(query.terms), "agent": query.agent_id, "limit": query.limit}
    _filters(query, "m", sql, params)
    sql.append("ORDER BY 2, m.seq DESC LIMIT :limit")
    return [(r[0], -float(r[1])) for r in conn.execute(sa.text(" ".join(sql)), params)]
