"""pgvector on a real PostgreSQL: embeddings in a typmod-less ``vector`` column at their native dimension
(migration m0010_pgvector, store/postgres/pgvector.py), and the opt-in HNSW index with its known trap: with a
per-agent filter, a plain HNSW scan silently returns fewer than k rows; the store's search never does.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import numpy as np
import pytest
from agent_helpers import on_loop

import letta_nb
from letta_nb.schemas import AgentState
from letta_nb.store.ids import new_id
from letta_nb.store.migrations import migrate
from letta_nb.store.postgres.pgvector import EF_SEARCH, hnsw_query
from letta_nb.store.records import PassageRecord
from letta_nb.store.vector import VectorQuery


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


async def _agent_with(store, name: str, matrix: np.ndarray, prefix: str) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    agent = AgentState(id=new_id("agent"), name=name, model="offline", embedding="hash", system="s", blocks=[],
                       tools=[], max_steps=5, created_at=now, metadata={})
    await store.insert_agent(agent)
    await store.insert_passages([PassageRecord(id=f"{prefix}{i}", agent_id=agent.id, text=f"{prefix} {i}",
                                               embedding=v.tobytes(), embedding_model="t", tags=(), created_at=now)
                                 for i, v in enumerate(matrix)])
    return agent.id


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _fetch(url: str, sql: str, *args):
    async def run():
        conn = await asyncpg.connect(_dsn(url))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


def test_embeddings_are_pgvector_values_at_their_native_dimension(pg_store_url):
    rng = np.random.default_rng(0)
    small, wide = _unit(rng, 3, 5), _unit(rng, 2, 12)
    with letta_nb.connect(pg_store_url) as c:
        store = c.runtime.store
        a = on_loop(c, _agent_with(store, "a", small, "s"))
        b = on_loop(c, _agent_with(store, "b", wide, "w"))
        hits = on_loop(c, store.vectors.search(VectorQuery(a, small[1], top_k=1)))
        assert hits[0].passage_id == "s1" and hits[0].score == pytest.approx(1.0, abs=1e-6)
        assert on_loop(c, store.vectors.search(VectorQuery(b, wide[0], top_k=2)))[0].passage_id == "w0"
    rows = _fetch(pg_store_url, "SELECT id, pg_typeof(embedding)::text, vector_dims(embedding), "
                                "embedding::text FROM passages ORDER BY id")
    assert {(r[0][0], r[1], r[2]) for r in rows} == {("s", "vector", 5), ("w", "vector", 12)}
    stored = {r[0]: np.array(r[3].strip("[]").split(","), dtype=np.float32) for r in rows}
    assert np.array_equal(stored["s2"], small[2]) and np.array_equal(stored["w1"], wide[1])  # bit-exact


def test_m0010_converts_bytea_embeddings_already_stored(pg_server):
    name = pg_server.create_database()
    url = pg_server.url(name)
    values = np.array([0.5, -1.25, 3.0e-39, -0.0, 1e20, -7.0e-3], dtype=np.float32)  # a subnormal, a -0

    async def before() -> None:  # a store at m0009: embeddings in bytea
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        async with engine.connect() as conn:
            await conn.run_sync(lambda c: migrate(c, target=9))
        await engine.dispose()
        conn2 = await asyncpg.connect(_dsn(url))
        await conn2.execute("INSERT INTO agents (id, name, model, embedding, system, max_steps, created_at, "
                            "metadata, last_seq, version, updated_at) "
                            "SELECT 'ag', 'ag', 'offline', 'hash', 's', 5, now(), '{}', 0, 1, now()")
        await conn2.execute("INSERT INTO passages (id, agent_id, text, embedding, embedding_model, tags, created_at) "
                            "VALUES ('p', 'ag', 't', $1, 'm', '[]', now())", values.tobytes())
        await conn2.close()
    try:
        asyncio.run(before())
    except asyncpg.PostgresError as e:  # the agents table's required columns changed: say which
        pytest.fail(f"seeding a m0009 store failed: {e}")
    with letta_nb.connect(url) as c:
        assert "m0010_pgvector" in c.runtime.store.applied_migrations
    (row,) = _fetch(url, "SELECT pg_typeof(embedding)::text, embedding::text FROM passages")
    assert row[0] == "vector"
    assert np.array_equal(np.array(row[1].strip("[]").split(","), dtype=np.float32), values)
    pg_server.drop_database(name)


def test_hnsw_with_a_per_agent_filter_returns_k_rows_where_a_plain_hnsw_scan_returns_fewer(pg_store_url):
    rng = np.random.default_rng(1)
    dim, k = 16, 10
    mine, others = _unit(rng, 40, dim), _unit(rng, 4000, dim)
    query = _unit(rng, 1, dim)[0]
    with letta_nb.connect(pg_store_url) as c:
        store = c.runtime.store
        a = on_loop(c, _agent_with(store, "small", mine, "m"))
        on_loop(c, _agent_with(store, "big", others, "o"))
        exact = [h.passage_id for h in on_loop(c, store.vectors.search(VectorQuery(a, query, top_k=k)))]
        on_loop(c, store.vectors.set_index(dim, "hnsw"))
        hits = on_loop(c, store.vectors.search(VectorQuery(a, query, top_k=k)))
        assert store.vectors.stats["hnsw_searches"] == 1
        assert len(hits) == k and all(h.passage_id.startswith("m") for h in hits)
        assert len(set(exact) & {h.passage_id for h in hits}) >= 9  # recall@10 of a 40-row agent
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

        async def plain_hnsw() -> int:  # the same plan without iterative scan: the trap this store avoids
            async with store._backend.pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL hnsw.iterative_scan = off; SET LOCAL hnsw.ef_search = {EF_SEARCH}; "
                                   "SET LOCAL enable_sort = off")
                return len(await conn.fetch(hnsw_query(dim), a, query, k))
        assert on_loop(c, plain_hnsw()) < k
        on_loop(c, store.vectors.set_index(dim, None))  # dropped: exact again
        again = [h.passage_id for h in on_loop(c, store.vectors.search(VectorQuery(a, query, top_k=k)))]
        assert again == exact and store.vectors.stats["hnsw_searches"] == 1
        with pytest.raises(letta_nb.InvalidArgumentError, match="hnsw"):
            on_loop(c, store.vectors.set_index(dim, "ivfflat"))
