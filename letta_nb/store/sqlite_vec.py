"""The SQLite vector store: sqlite-vec ``vec0`` tables, in step with ``passages`` whenever they are searched.

Layout (SQLite-only, so it lives here and not in the portable migrations; everything is created with
``IF NOT EXISTS`` by :meth:`SqliteVecStore.prepare`, and can be dropped and rebuilt from
``passages.embedding``):

- ``passages_vec_<dim>``: one vec0 table per vector dimension, cosine distance, ``agent_id`` as its
  partition key (an agent's search never reads another agent's vectors) and ``created_at`` as a metadata
  column (time filters are applied inside the KNN scan). Deleting a passage deletes its vector in the
  same transaction (an AFTER DELETE trigger, whoever deletes: the API, a re-upload, the cascade from
  deleting an agent). New passages are copied in lazily, just before the agent's first vec0 search after
  them (:meth:`SqliteVecStore._sync`): vec0 only serves agents too large for the in-memory copy, and an
  insert trigger made vec0 upkeep most of an upload's write cost (~70 us a row, twice the WAL traffic).
  ``passages_vec_sync`` records, per agent, the passage versions and highest rowid already copied.
- ``passage_versions``: per agent, how many passages were ever inserted and deleted (bumped by
  triggers). It is how the in-memory copy (vector_cache.py) knows it is stale: unchanged counters mean
  unchanged passages; only inserts since the copy (``rowid`` above its last) can be appended; any delete
  means a reload.

Searching: an agent whose vectors fit the cache budget (``LETTA_NB_VECTOR_CACHE_MB``, default 1024) is
searched exactly in numpy; a larger one with a vec0 KNN query (exact too: vec0 is a brute-force
scan). Tag filters in vec0 become ``passage_id IN (...)`` constraints, applied during the scan.

All SQL runs on one dedicated connection (with sqlite-vec loaded) in worker threads, under a lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import OrderedDict
from typing import Any

from letta_nb.errors import DimensionMismatchError, InvalidArgumentError
from letta_nb.store.sqlite_driver import connect_raw, write_transaction
from letta_nb.store.vector import VectorHit, VectorQuery
from letta_nb.store.vector_cache import AgentVectors

__all__ = ["SqliteVecStore", "VEC0_MAX_K"]

VEC0_MAX_K = 4096  # sqlite-vec's limit on k

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


def _vec_ddl(dim: int) -> list[str]:
    t, nbytes = f"passages_vec_{dim}", 4 * dim
    return [
        f"CREATE VIRTUAL TABLE {t} USING vec0(passage_id TEXT PRIMARY KEY, agent_id TEXT PARTITION KEY, "
        f"embedding float[{dim}] distance_metric=cosine, created_at TEXT)",
        f"CREATE TRIGGER {t}_ad AFTER DELETE ON passages WHEN length(old.embedding) = {nbytes} BEGIN "
        f"DELETE FROM {t} WHERE passage_id = old.id; END",
    ]


def _cache_budget_bytes() -> int:
    raw = os.environ.get("LETTA_NB_VECTOR_CACHE_MB", "1024")
    try:
        mb = float(raw)
    except ValueError:
        raise InvalidArgumentError(f"LETTA_NB_VECTOR_CACHE_MB={raw!r} is not a number of megabytes (0 turns the cache off)") from None
    return int(mb * 1024 * 1024)


class SqliteVecStore:
    """:class:`~letta_nb.store.vector.VectorStore` over a SQLite file (see the module docstring)."""

    def __init__(self, path: str, *, cache_bytes: int | None = None):
        self._path = path
        self._conn: Any = None
        self._lock = threading.Lock()
        self._dims: set[int] = set()  # dimensions whose vec0 table exists (this process has checked)
        self._versions_ready = False
        self.cache_bytes = _cache_budget_bytes() if cache_bytes is None else cache_bytes
        self._cache: OrderedDict[str, AgentVectors] = OrderedDict()  # LRU, agent id -> vectors
        self._stored_dims: dict[str, tuple[tuple[int, int], set[int], int]] = {}  # agent -> (version, dims, max rowid)
        self.stats = {"cache_searches": 0, "vec0_searches": 0, "reloads": 0, "appends": 0}

    # ---- plumbing ------------------------------------------------------------------------------------
    def _db(self) -> Any:
        if self._conn is None:
            self._conn = connect_raw(self._path)
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
            name = f"passages_vec_{dim}"
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
            if not exists:
                for statement in _vec_ddl(dim):
                    db.execute(statement)
            # Stores indexed by an insert trigger (before lazy sync): drop it; with no sync state recorded,
            # the first vec0 search of each agent checks every row (see _sync).
            db.execute(f"DROP TRIGGER IF EXISTS {name}_ai")
        self._versions_ready = True
        self._dims.add(dim)

    # ---- search --------------------------------------------------------------------------------------
    async def search(self, query: VectorQuery) -> list[VectorHit]:
        await self.prepare(query.dim)
        return await self._run(self._search, query)

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
        self.stats["vec0_searches"] += 1
        self._sync(db, query.agent_id, query.dim, version)
        return self._vec0_search(db, query)

    def _sync(self, db: Any, agent_id: str, dim: int, version: tuple[int, int]) -> None:
        """Bring the agent's vec0 rows up to its passages before a vec0 search.

        Deletes reach vec0 at once (a trigger); inserts are copied here, lazily, because vec0 is only
        searched for agents too large for the in-memory copy and a per-row insert trigger was most of an
        upload's write cost. The state (passage versions and highest rowid copied) is stored beside the
        table, in the same transaction as the copy, so every connection and process shares it.
        """
        table, nbytes = f"passages_vec_{dim}", 4 * dim
        state = db.execute("SELECT inserts, deletes, max_rowid FROM passages_vec_sync WHERE dim = ? AND agent_id = ?",
                           (dim, agent_id)).fetchone()
        if state is not None and (state[0], state[1]) == version:
            return
        with write_transaction(db) as cursor:
            version = self._version(cursor, agent_id)  # again, under the write lock
            if state is not None and state[1] == version[1]:
                # Inserts only since the last copy: they have higher rowids (a rowid can only be reused
                # after the agent's highest row is deleted, and that bumps the delete counter).
                missing, args = "rowid > ?", (state[2],)
            else:  # never copied, or rows were deleted since: add whatever vec0 lacks
                missing, args = f"id NOT IN (SELECT passage_id FROM {table})", ()
            cursor.execute(f"INSERT INTO {table} (passage_id, agent_id, embedding, created_at) "
                           "SELECT id, agent_id, embedding, created_at FROM passages "
                           f"WHERE agent_id = ? AND length(embedding) = ? AND {missing} ORDER BY rowid",
                           (agent_id, nbytes, *args))
            top = cursor.execute("SELECT coalesce(max(rowid), 0) FROM passages WHERE agent_id = ?", (agent_id,)).fetchone()[0]
            cursor.execute("INSERT OR REPLACE INTO passages_vec_sync (dim, agent_id, inserts, deletes, max_rowid) "
                           "VALUES (?, ?, ?, ?, ?)", (dim, agent_id, version[0], version[1], top))

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
        dims = (set(known[1]) if after else set()) | {int(r[0]) for r in rows if r[0]}
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
    def _rows(db: Any, agent_id: str, dim: int, after_rowid: int) -> list[tuple[int, str, bytes, list[str], str]]:
        rows = db.execute(
            "SELECT rowid, id, embedding, tags, created_at FROM passages "
            "WHERE agent_id = ? AND rowid > ? AND length(embedding) = ? ORDER BY rowid",
            (agent_id, after_rowid, 4 * dim),
        ).fetchall()
        return [(r[0], r[1], r[2], json.loads(r[3]) if r[3] else [], r[4]) for r in rows]

    def _evict(self) -> None:
        total = sum(v.nbytes for v in self._cache.values())
        while self._cache and total > self.cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes

    def _vec0_search(self, db: Any, query: VectorQuery) -> list[VectorHit]:
        if query.top_k > VEC0_MAX_K:
            raise InvalidArgumentError(
                f"top_k={query.top_k} is above sqlite-vec's limit of {VEC0_MAX_K} for agents too large for the "
                f"vector cache; ask for fewer, or raise LETTA_NB_VECTOR_CACHE_MB."
            )
        sql = [f"SELECT passage_id, distance FROM passages_vec_{query.dim} WHERE embedding MATCH ? AND k = ? AND agent_id = ?"]
        params: list[Any] = [query.vector.tobytes(), query.top_k, query.agent_id]
        if query.start is not None:
            sql.append("AND created_at >= ?")
            params.append(query.start_text)
        if query.end is not None:
            sql.append("AND created_at < ?")
            params.append(query.end_text)
        if query.tags:
            sql.append("AND passage_id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(self._tagged_ids(db, query)))
        rows = db.execute(" ".join(sql), params).fetchall()
        rows.sort(key=lambda r: r[1])  # stable: equal distances keep vec0's (insertion) order
        return [VectorHit(pid, 1.0 - float(distance)) for pid, distance in rows]

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
