"""The SQLite vector store: exact search of ``passages.embedding``, in numpy or with sqlite-vec's ``vec0``.

The vector lives in its row (``passages.embedding``), the one truth; everything here can be dropped and
rebuilt from it. Searching an agent, fastest first:

- its vectors fit the cache budget (``LETTA_NB_VECTOR_CACHE_MB``, default 1024): the in-memory copy
  (vector_cache.py), brought up to date by version counters, searched in numpy;
- larger, and sqlite-vec loads through the runtime's sqlite3 module (see driver.py): a vec0 KNN
  query (a brute-force scan too, so exact), after :meth:`SqliteVecStore._sync` brings the agent's vec0
  rows up to its passages;
- larger, and no sqlite-vec (the stdlib sqlite3 of many Python builds cannot load extensions, and
  the runtime never loads a second SQLite library unless asked): a streaming exact scan of the agent's
  rows in batches (:func:`~letta_nb.store.vector_cache.search_batches`), memory bounded by one batch.
All three return the same ids in the same order (ties by insertion); the tests compare them.

Layout (SQLite-only, so it lives here and not in the portable migrations; created with ``IF NOT EXISTS``
by :meth:`SqliteVecStore.prepare`):

- ``passage_versions``: per agent, how many passages were ever inserted and deleted (bumped by plain
  SQL triggers, whoever writes). Unchanged counters mean unchanged passages; only inserts since a copy
  (``rowid`` above its last) can be appended; any delete means a reload (of the cache) or a delete
  sweep (of vec0).
- ``passages_vec_<dim>`` (only where sqlite-vec loads): one vec0 table per dimension, cosine distance,
  ``agent_id`` as its partition key (an agent's search never reads another agent's vectors) and
  ``created_at`` as a metadata column (time filters apply inside the KNN scan). It is kept in step
  lazily, inserts *and* deletes, just before the agent's vec0 search. No trigger writes it: a trigger
  body naming a vec0 table fails with "no such module: vec0" on any connection without sqlite-vec, so
  deleting a passage or an agent would fail for whoever opened the file without it (the stdlib module,
  a notebook peek, another Python). Triggers written by earlier versions are dropped when a store
  opens (:func:`drop_vec_triggers`; DROP TRIGGER, ``PRAGMA integrity_check`` and cascading deletes all
  work without the module). An insert trigger also made vec0 upkeep most of an upload's write cost
  (~70 us a row, twice the WAL traffic).
- ``passages_vec_sync``: per (dimension, agent), the passage versions and highest rowid already in vec0.

All SQL runs on one dedicated connection (sqlite-vec loaded when used) in worker threads, under a lock.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from letta_nb.errors import DimensionMismatchError, InvalidArgumentError
from letta_nb.store.sqlite.driver import connect_raw, vec_version, write_transaction
from letta_nb.store.vector import VectorHit, VectorQuery
from letta_nb.store.vector_cache import (
    SCORE_NOISE,
    AgentVectors,
    Row,
    search_batches,
    top_k,
)

__all__ = ["SqliteVecStore", "VEC0_MAX_K", "SCAN_BATCH_ROWS", "drop_vec_triggers"]

VEC0_MAX_K = 4096  # sqlite-vec's limit on k; a larger top_k is answered by the scan instead
SCAN_BATCH_ROWS = 4096  # rows a streaming scan holds at once (6 MB at 384 dimensions)

_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS passage_versions ("
    "agent_id TEXT PRIMARY KEY, inserts INTEGER NOT NULL, deletes INTEGER NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS passages_version_ai AFTER INSERT ON passages BEGIN "
    "INSERT INTO passage_versions (agent_id, inserts, deletes) VALUES (new.agent_id, 1, 0) "
    "ON CONFLICT (agent_id) DO UPDATE SET inserts = inserts + 1; END",
    "CREATE TRIGGER IF NOT EXISTS passages_version_ad AFTER DELETE ON passages BEGIN "
    "INSERT INTO passage_versions (agent_id, inserts, deletes) VALUES (old.agent_id, 0, 1) "
    "ON CONFLICT (agent_id) DO UPDATE SET deletes = deletes + 1; END",
)


_SYNC = (
    "CREATE TABLE IF NOT EXISTS passages_vec_sync ("
    "dim INTEGER NOT NULL, agent_id TEXT NOT NULL, inserts INTEGER NOT NULL, deletes INTEGER NOT NULL, "
    "max_rowid INTEGER NOT NULL, PRIMARY KEY (dim, agent_id))"
)


def _vec_ddl(dim: int) -> str:
    return (f"CREATE VIRTUAL TABLE IF NOT EXISTS passages_vec_{dim} USING vec0(passage_id TEXT PRIMARY KEY, "
            f"agent_id TEXT PARTITION KEY, embedding float[{dim}] distance_metric=cosine, created_at TEXT)")


# Triggers earlier versions put on ``passages`` to write vec0 tables (``_ai`` on insert, ``_ad`` on delete).
_VEC_TRIGGERS = ("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'passages' "
                 "AND (name GLOB 'passages_vec_*_ad' OR name GLOB 'passages_vec_*_ai')")


def drop_vec_triggers(conn: Any) -> list[str]:
    """Drop the vec0-writing triggers of a store written by an earlier version; return their names.

    ``conn`` is a SQLAlchemy sync connection in a write transaction (Store.open runs this right after the
    migrations). Needs no sqlite-vec: DROP TRIGGER never compiles the trigger's body.
    """
    names = [r[0] for r in conn.exec_driver_sql(_VEC_TRIGGERS)]
    for name in names:
        conn.exec_driver_sql(f'DROP TRIGGER IF EXISTS "{name}"')
    conn.commit()
    return names


def _cache_budget_bytes() -> int:
    """The ``vector_cache_mb`` setting (``LETTA_NB_VECTOR_CACHE_MB``, default 1024; 0 turns the cache off)."""
    from letta_nb.settings import current

    return int(current().vector_cache_mb * 1024 * 1024)


class SqliteVecStore:
    """:class:`~letta_nb.store.vector.VectorStore` over a SQLite file (see the module docstring)."""

    def __init__(self, path: str, *, cache_bytes: int | None = None, vec0: bool | None = None):
        """``vec0``: None uses sqlite-vec when it loads through the runtime's sqlite3 module; False never
        (agents over the cache budget are scanned); True requires it (SQLiteExtensionError otherwise)."""
        self._path = path
        self._conn: Any = None
        self._lock = threading.Lock()
        self.vec0 = vec_version() is not None if vec0 is None else bool(vec0)
        self._dims: set[int] = set()  # dimensions prepared (and whose vec0 table exists, with vec0)
        self._versions_ready = False
        self.cache_bytes = _cache_budget_bytes() if cache_bytes is None else cache_bytes
        self.scan_batch_rows = SCAN_BATCH_ROWS
        self._cache: OrderedDict[str, AgentVectors] = OrderedDict()  # LRU, agent id -> vectors
        self._stored_dims: dict[str, tuple[tuple[int, int], set[int], int]] = {}  # agent -> (version, dims, max rowid)
        self.stats = {"cache_searches": 0, "vec0_searches": 0, "scan_searches": 0, "reloads": 0, "appends": 0}

    # ---- plumbing ------------------------------------------------------------------------------------
    def _db(self) -> Any:
        if self._conn is None:
            self._conn = connect_raw(self._path, vec=self.vec0)
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    async def close(self) -> None:
        def shut() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._cache.clear()

        await asyncio.to_thread(shut)

    # ---- schema --------------------------------------------------------------------------------------
    async def prepare(self, dim: int) -> None:
        if dim in self._dims and self._versions_ready:
            return
        if not isinstance(dim, int) or dim < 1:
            raise InvalidArgumentError(f"vector dimension must be a positive integer, got {dim!r}")
        await self._run(self._prepare, dim)

    def _prepare(self, dim: int) -> None:
        with write_transaction(self._db()) as db:  # DDL under the write lock: no other kernel races it
            for statement in (*_VERSIONS, _SYNC):
                db.execute(statement)
            if self.vec0:
                db.execute(_vec_ddl(dim))
            # Stores written with vec0 triggers: Store.open drops them; again here for a store a process of
            # an earlier version opened since. With no sync state recorded, the first vec0 search of each
            # agent checks every row (see _sync).
            for (name,) in db.execute(_VEC_TRIGGERS).fetchall():
                db.execute(f'DROP TRIGGER IF EXISTS "{name}"')
        self._versions_ready = True
        self._dims.add(dim)

    # ---- search --------------------------------------------------------------------------------------
    async def search(self, query: VectorQuery) -> list[VectorHit]:
        await self.prepare(query.dim)
        hits: list[VectorHit] = await self._run(self._search, query)
        return hits

    def _search(self, query: VectorQuery) -> list[VectorHit]:
        db = self._db()
        version = self._version(db, query.agent_id)
        dims = self._agent_dims(db, query.agent_id, version)
        if not dims:
            return []
        if dims != {query.dim}:
            raise DimensionMismatchError(
                f"the query vector has {query.dim} dimensions but this agent's archival passages have "
                f"{' and '.join(str(d) for d in sorted(dims))}: they were embedded with another embedder. Search with "
                "the agent's embedder, or delete those passages/files and upload them again with the current one."
            )
        vectors = self._cached(db, query.agent_id, query.dim, version)
        if vectors is not None:
            self.stats["cache_searches"] += 1
            return vectors.search(query)
        if self.vec0 and query.top_k <= VEC0_MAX_K:
            self.stats["vec0_searches"] += 1
            self._sync(db, query.agent_id, query.dim, version)
            return self._vec0_search(db, query)
        self.stats["scan_searches"] += 1
        return self._scan_search(db, query)

    def _scan_search(self, db: Any, query: VectorQuery) -> list[VectorHit]:
        """Exact search of an agent too large for the cache, without vec0: one SELECT (one snapshot) read
        in batches of ``scan_batch_rows``, a running top-k kept (see vector_cache.search_batches).

        No ORDER BY: sorting by rowid would make SQLite hold every row in a temporary B-tree (the whole
        agent, the memory this path exists to bound); the agent's index yields them in (created_at,
        rowid) order and ties are broken by rowid afterwards. Time bounds use that index too (the same
        text comparison the in-memory copy makes)."""
        tags = "tags" if query.tags else "NULL"  # decoding every row's JSON tags was most of the Python time
        sql = [f"SELECT rowid, id, embedding, {tags}, created_at FROM passages "
               "WHERE agent_id = ? AND length(embedding) = ?"]
        params: list[Any] = [query.agent_id, 4 * query.dim]
        _time_bounds(query, sql, params)
        cursor = db.execute(" ".join(sql), params)
        try:
            if query.tags:
                batches = iter(lambda: [_row(r) for r in cursor.fetchmany(self.scan_batch_rows)], [])
            else:  # rows as SQLite returns them: tags None, nothing to decode
                batches = iter(lambda: cursor.fetchmany(self.scan_batch_rows), [])
            return search_batches(query.dim, batches, query)
        finally:
            cursor.close()

    def _sync(self, db: Any, agent_id: str, dim: int, version: tuple[int, int]) -> None:
        """Bring the agent's vec0 rows up to its passages before a vec0 search.

        Inserts and deletes are both applied here, lazily: no trigger writes vec0 (see the module
        docstring), vec0 is only searched for agents too large for the in-memory copy, and a per-row
        insert trigger was most of an upload's write cost. After deletes, the agent's vec0 rows whose
        passage is gone are removed, and so are the rows of agents deleted since. The state (passage
        versions and highest rowid copied) is stored beside the table, in the same transaction as the
        copy, so every connection and process shares it.
        """
        table, nbytes = f"passages_vec_{dim}", 4 * dim
        state = db.execute("SELECT inserts, deletes, max_rowid FROM passages_vec_sync WHERE dim = ? AND agent_id = ?",
                           (dim, agent_id)).fetchone()
        if state is not None and (state[0], state[1]) == version:
            return
        with write_transaction(db) as cursor:
            version = self._version(cursor, agent_id)  # again, under the write lock
            args: tuple[Any, ...]
            if state is not None and state[1] == version[1]:
                # Inserts only since the last copy: they have higher rowids (a rowid can only be reused
                # after the agent's highest row is deleted, and that bumps the delete counter).
                missing, args = "rowid > ?", (state[2],)
            else:  # never copied, or rows were deleted since: drop what is gone, add whatever vec0 lacks
                cursor.execute(f"DELETE FROM {table} WHERE agent_id = ? AND passage_id NOT IN "
                               "(SELECT id FROM passages WHERE agent_id = ?)", (agent_id, agent_id))
                self._drop_deleted_agents(cursor, table, dim)
                missing, args = f"id NOT IN (SELECT passage_id FROM {table})", ()
            cursor.execute(f"INSERT INTO {table} (passage_id, agent_id, embedding, created_at) "
                           "SELECT id, agent_id, embedding, created_at FROM passages "
                           f"WHERE agent_id = ? AND length(embedding) = ? AND {missing} ORDER BY rowid",
                           (agent_id, nbytes, *args))
            top = cursor.execute("SELECT coalesce(max(rowid), 0) FROM passages WHERE agent_id = ?",
                                 (agent_id,)).fetchone()[0]
            cursor.execute("INSERT OR REPLACE INTO passages_vec_sync (dim, agent_id, inserts, deletes, max_rowid) "
                           "VALUES (?, ?, ?, ?, ?)", (dim, agent_id, version[0], version[1], top))

    @staticmethod
    def _drop_deleted_agents(cursor: Any, table: str, dim: int) -> None:
        """vec0 rows (and sync state) of agents deleted since they were copied: no search reads them
        (each is partitioned by agent) but they hold space."""
        gone = cursor.execute("SELECT agent_id FROM passages_vec_sync WHERE dim = ? AND agent_id NOT IN "
                              "(SELECT id FROM agents)", (dim,)).fetchall()
        for (agent_id,) in gone:
            cursor.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
            cursor.execute("DELETE FROM passages_vec_sync WHERE dim = ? AND agent_id = ?", (dim, agent_id))

    @staticmethod
    def _version(db: Any, agent_id: str) -> tuple[int, int]:
        row = db.execute("SELECT inserts, deletes FROM passage_versions WHERE agent_id = ?", (agent_id,)).fetchone()
        return (row[0], row[1]) if row else (0, 0)

    def _agent_dims(self, db: Any, agent_id: str, version: tuple[int, int]) -> set[int]:
        """Dimensions of the agent's stored vectors; after inserts only, just the new rows are read."""
        known = self._stored_dims.get(agent_id)
        if known is not None and known[0] == version:
            return known[1]
        after = known[2] if known is not None and known[0][1] == version[1] else 0
        rows = db.execute(
            "SELECT length(embedding) / 4, max(rowid) FROM passages "
            "WHERE agent_id = ? AND rowid > ? AND embedding IS NOT NULL GROUP BY 1",
            (agent_id, after),
        ).fetchall()
        dims = (set(known[1]) if known is not None and after else set()) | {int(r[0]) for r in rows if r[0]}
        self._stored_dims[agent_id] = (version, dims, max([after, *(r[1] for r in rows)]))
        return dims

    def _cached(self, db: Any, agent_id: str, dim: int, version: tuple[int, int]) -> AgentVectors | None:
        """The agent's vectors, brought up to date, or None when they do not fit the budget."""
        entry = self._cache.get(agent_id)
        if entry is not None and entry.dim == dim:
            self._cache.move_to_end(agent_id)
            if entry.version == version:
                return entry
            if entry.version[1] == version[1]:  # inserts only: append the rows added since
                entry.append(self._rows(db, agent_id, dim, entry.max_rowid))
                entry.version = version
                self.stats["appends"] += 1
                self._evict()
                return entry if agent_id in self._cache else None
        self._cache.pop(agent_id, None)
        count = db.execute("SELECT count(*) FROM passages WHERE agent_id = ?", (agent_id,)).fetchone()[0]
        if count * dim * 4 > self.cache_bytes:
            return None
        entry = AgentVectors(dim, version)
        entry.append(self._rows(db, agent_id, dim, 0))
        self.stats["reloads"] += 1
        self._cache[agent_id] = entry
        self._evict()
        return entry if agent_id in self._cache else None

    @staticmethod
    def _rows(db: Any, agent_id: str, dim: int, after_rowid: int) -> list[Row]:
        rows = db.execute(
            "SELECT rowid, id, embedding, tags, created_at FROM passages "
            "WHERE agent_id = ? AND rowid > ? AND length(embedding) = ? ORDER BY rowid",
            (agent_id, after_rowid, 4 * dim),
        ).fetchall()
        return [_row(r) for r in rows]

    def _evict(self) -> None:
        total = sum(v.nbytes for v in self._cache.values())
        while self._cache and total > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes

    def _vec0_search(self, db: Any, query: VectorQuery) -> list[VectorHit]:
        """vec0's KNN finds the candidates; they are rescored like the numpy paths (float64, ties by rowid).

        vec0 computes its distances in float32 and orders equal ones its own way (measured: later rows
        first), so it is asked for a few more than ``top_k``, and for more again while the last one it
        returns is within ``SCORE_NOISE`` of the k-th: then every row that could be in the exact top-k is
        a candidate. Past vec0's k limit, the scan answers instead.
        """
        sql = [f"SELECT passage_id, distance FROM passages_vec_{query.dim} "
               "WHERE embedding MATCH ? AND k = ? AND agent_id = ?"]
        params: list[Any] = [query.vector.tobytes(), 0, query.agent_id]
        _time_bounds(query, sql, params)
        if query.tags:
            sql.append("AND passage_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(self._tagged_ids(db, query)))
        fetch = query.top_k + 8
        while True:
            params[1] = min(fetch, VEC0_MAX_K)
            found = db.execute(" ".join(sql), params).fetchall()
            if len(found) < params[1] or found[-1][1] - found[query.top_k - 1][1] > SCORE_NOISE:
                break  # vec0 ran out of rows, or saw past every near-tie of the k-th
            if params[1] == VEC0_MAX_K:
                return self._scan_search(db, query)
            fetch *= 4
        rows = db.execute("SELECT rowid, id, embedding FROM passages WHERE id IN (SELECT value FROM json_each(?))",
                          (json.dumps([r[0] for r in found]),)).fetchall()
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), query.dim)
        best, scores = top_k(matrix @ query.vector, matrix.__getitem__, query.vector, query.top_k,
                             keys=np.array([r[0] for r in rows], dtype=np.int64))
        return [VectorHit(rows[i][1], s) for i, s in zip(best.tolist(), scores.tolist(), strict=True)]

    @staticmethod
    def _tagged_ids(db: Any, query: VectorQuery) -> list[str]:
        marks = ", ".join("?" * len(query.tags))
        having = f"HAVING count(DISTINCT t.value) = {len(query.tags)}" if query.tag_match_mode == "all" else ""
        rows = db.execute(
            f"SELECT p.id FROM passages p, json_each(p.tags) t WHERE p.agent_id = ? AND t.value IN ({marks}) "
            f"GROUP BY p.id {having}",
            (query.agent_id, *query.tags),
        ).fetchall()
        return [r[0] for r in rows]


def _row(r: Any) -> Row:
    """A ``(rowid, id, embedding, tags, created_at)`` row of ``passages`` with its tags decoded."""
    return (r[0], r[1], r[2], json.loads(r[3]) if r[3] else [], r[4])


def _time_bounds(query: VectorQuery, sql: list[str], params: list[Any]) -> None:
    """Append the query's creation-time bounds (the same text comparison the in-memory copy makes)."""
    if query.start is not None:
        sql.append("AND created_at >= ?")
        params.append(query.start_text)
    if query.end is not None:
        sql.append("AND created_at < ?")
        params.append(query.end_text)
