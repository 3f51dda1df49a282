"""The PostgreSQL vector store: exact search on the in-memory copy of an agent's vectors, fed from PostgreSQL.

Why not pgvector's own scan by default: exact search in numpy over the copy measured 2.5x faster than
pgvector's exact scan at 100k x 384, 11x on one agent's 10k rows (shared/DESIGN.md). So, as on SQLite, each
searched agent's vectors are held in memory (:class:`~letta_nb.store.vector_cache.AgentVectors`) and
brought up to date before each search from the agent's ``passage_versions`` row (postgres/schema.py):
unchanged counters mean an unchanged copy; only inserts since (``pseq`` above the copy's last) are appended;
any delete reloads. The version and the rows are read in one REPEATABLE READ snapshot, so a search sees
exactly the passages committed before it.

Storage: ``passages.embedding`` is a pgvector ``vector`` at the embedder's native dimension, read as the same
float32 bytes as on SQLite (postgres/pgvector.py). An agent larger than the cache budget is read for that
search and not kept. Opt-in per dimension, :meth:`PgVectorStore.set_index` builds an HNSW index; then that
dimension's searches without tag or date filters go through it (approximate: the bench reports its recall),
always with ``hnsw.iterative_scan = relaxed_order`` (pgvector.py says why); filtered ones stay exact.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any

from letta_nb.errors import DimensionMismatchError, InvalidArgumentError
from letta_nb.store.ids import sql_time
from letta_nb.store.postgres.pgvector import EF_SEARCH, hnsw_ddl, hnsw_query, index_name
from letta_nb.store.sqlite.vectors import _cache_budget_bytes
from letta_nb.store.vector import VectorHit, VectorQuery
from letta_nb.store.vector_cache import AgentVectors, Row

__all__ = ["PgVectorStore"]

_ROWS = ("SELECT pseq, id, embedding, tags, created_at FROM passages WHERE agent_id = $1 AND pseq > $2 "
         "AND embedding IS NOT NULL ORDER BY pseq")


def _row(r: Any) -> Row:
    created: dt.datetime = r[4]
    return (r[0], r[1], r[2], r[3] or [], sql_time(created))


_BUILD_MEMORY = "1GB"  # an HNSW build's maintenance_work_mem: 100k x 384 with m = 32 needs ~300 MB


class PgVectorStore:
    """:class:`~letta_nb.store.vector.VectorStore` over PostgreSQL (see the module docstring)."""

    def __init__(self, pool: Any, *, cache_bytes: int | None = None):
        self._pool = pool
        self.cache_bytes = _cache_budget_bytes() if cache_bytes is None else cache_bytes
        self._cache: OrderedDict[str, tuple[AgentVectors, set[int]]] = OrderedDict()  # LRU: (vectors, dims)
        self.ef_search = EF_SEARCH  # HNSW candidates per search: recall against speed (bench vector sweeps it)
        self.stats = {"cache_searches": 0, "uncached_searches": 0, "reloads": 0, "appends": 0, "hnsw_searches": 0}

    async def prepare(self, dim: int) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InvalidArgumentError(f"vector dimension must be a positive integer, got {dim!r}")

    async def close(self) -> None:
        self._cache.clear()

    async def set_index(self, dim: int, kind: str | None) -> None:
        """``"hnsw"``: build (or keep) the HNSW index of dimension ``dim``, so its agents' unfiltered searches
        use it; ``None``: drop it (exact search again). A store setting: every process sees it at its next
        search. Building reads every passage of that dimension (minutes for millions of rows)."""
        await self.prepare(dim)
        if kind not in ("hnsw", None):
            raise InvalidArgumentError(f"vector index kind must be 'hnsw' or None (exact search), got {kind!r}")
        async with self._pool.acquire() as conn:
            if kind is None:
                await conn.execute(f"DROP INDEX IF EXISTS {index_name(dim)}")
            else:  # the graph built in memory when it fits (pgvector warns and slows down to a crawl otherwise)
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'")
                    await conn.execute(hnsw_ddl(dim))

    async def _hnsw(self, conn: Any, query: VectorQuery) -> list[VectorHit]:
        # Always iterative: with the per-agent filter, a plain HNSW scan returns fewer than k rows (the trap).
        await conn.execute(f"SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = "
                           f"{max(int(self.ef_search), query.top_k)}; SET LOCAL enable_sort = off")
        rows = await conn.fetch(hnsw_query(query.dim), query.agent_id, query.vector, query.top_k)
        self.stats["hnsw_searches"] += 1
        hits = sorted(((float(r[1]), r[0]) for r in rows), key=lambda h: -h[0])  # relaxed order: re-sorted
        return [VectorHit(pid, score) for score, pid in hits]

    async def search(self, query: VectorQuery) -> list[VectorHit]:
        await self.prepare(query.dim)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow("SELECT v.inserts, v.deletes, to_regclass($2)::text FROM (SELECT 1) AS one "
                                      "LEFT JOIN passage_versions v ON v.agent_id = $1", query.agent_id,
                                      index_name(query.dim))
            if row[2] is not None and not (query.tags or query.start or query.end):
                return await self._hnsw(conn, query)
            version = (0, 0) if row[0] is None else (row[0], row[1])
            vectors, dims = await self._current(conn, query.agent_id, version)
        if not dims:
            return []
        if dims != {query.dim}:
            raise DimensionMismatchError(
                f"the query vector has {query.dim} dimensions but this agent's archival passages have "
                f"{' and '.join(str(d) for d in sorted(dims))}: they were embedded with another embedder. Search "
                "with the agent's embedder, or delete those passages/files and upload them again with the current one."
            )
        return vectors.search(query)

    async def _current(self, conn: Any, agent_id: str, version: tuple[int, int]) -> tuple[AgentVectors, set[int]]:
        """The agent's vectors as of ``version`` (and the dimensions its passages have)."""
        cached = self._cache.get(agent_id)
        if cached is not None:
            entry, dims = cached
            self._cache.move_to_end(agent_id)
            if entry.version == version:
                self.stats["cache_searches"] += 1
                return cached
            if entry.n and entry.version[1] == version[1]:  # inserts only: append the rows committed since
                rows = [_row(r) for r in await conn.fetch(_ROWS, agent_id, entry.max_rowid)]
                dims |= {len(r[2]) // 4 for r in rows}
                if dims == {entry.dim}:
                    entry.append(rows)
                entry.version = version
                self.stats["appends"] += 1
                self._evict()
                return entry, dims
        self._cache.pop(agent_id, None)
        rows = [_row(r) for r in await conn.fetch(_ROWS, agent_id, 0)]
        dims = {len(r[2]) // 4 for r in rows}
        entry = AgentVectors(next(iter(dims)) if len(dims) == 1 else 1, version)
        if len(dims) == 1:
            entry.append(rows)
        self.stats["reloads"] += 1
        if entry.nbytes <= self.cache_bytes:
            self._cache[agent_id] = (entry, dims)
            self._evict()
        else:
            self.stats["uncached_searches"] += 1
        return entry, dims

    def _evict(self) -> None:
        total = sum(v.nbytes for v, _ in self._cache.values())
        while self._cache and total > self.cache_bytes:
            _, (dropped, _) = self._cache.popitem(last=False)
            total -= dropped.nbytes
