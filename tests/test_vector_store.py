"""Archival search equals an exact numpy reference on every path of the SQLite vector store.

A seeded dataset (two agents, tags, creation times spread over days) is written as real passage rows
to a real store file. Every query runs through each path: the in-memory copy (the default), the
streaming scan (an agent over the cache budget where sqlite-vec cannot load; ``cache_bytes=0,
vec0=False``, in small batches) and sqlite-vec's vec0 (``cache_bytes=0, vec0=True``), and must return
the ids of ``argsort(-X @ q, kind="stable")`` over the agent's filtered rows, with the same scores; the
paths must agree with each other. Then the index must follow inserts (also those the step writer makes;
vec0 copies them lazily, even into a reused rowid), deletes and agent deletion (vec0 lazily too), refuse
a query of the wrong dimension, and build itself for a store written before it existed (schema 2).

vec0 needs a sqlite3 module that can load extensions. The stdlib one of this machine's Python cannot,
and the runtime loads pysqlite3 only when ``LETTA_NB_SQLITE=pysqlite3`` (never beside the stdlib
module on one file), so the vec0 cases run in a child pytest process that opted in
(tests/test_vector_store_processes.py, which also moves stores between processes with and without vec0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json

import numpy as np
import pytest
import sqlalchemy as sa

import letta_nb
from letta_nb.errors import DimensionMismatchError, InvalidArgumentError
from letta_nb.schemas import AgentState
from letta_nb.store.ids import new_id
from letta_nb.store.migrations import MIGRATIONS, migrate
from letta_nb.store.records import PassageRecord
from letta_nb.store.sqlite.driver import connect_raw, sqlite_module, vec_version
from letta_nb.store.sqlite.vectors import VEC0_MAX_K, SqliteVecStore
from letta_nb.store.store import Store
from letta_nb.store.vector import VectorQuery

HAVE_VEC0 = vec_version() is not None
needs_vec0 = pytest.mark.skipif(not HAVE_VEC0, reason="sqlite-vec cannot load through this process's sqlite3 "
                                "module; run in the LETTA_NB_SQLITE=pysqlite3 child process")
PATHS = ("cache", "scan", "vec0") if HAVE_VEC0 else ("cache", "scan")


DIM = 32
TAGS = ("red", "green", "blue")
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows_for(agent_id: str, vectors: np.ndarray, rng: np.random.Generator, start: int = 0) -> list[PassageRecord]:
    return [
        PassageRecord(id=f"p-{agent_id}-{start + i}", agent_id=agent_id, text=f"passage {start + i}",
                      embedding=v.tobytes(), embedding_model="test", created_at=T0 + dt.timedelta(hours=start + i),
                      tags=tuple(sorted({TAGS[j] for j in range(3) if rng.random() < 0.4})))
        for i, v in enumerate(vectors)
    ]


def reference(rows: list[PassageRecord], q: np.ndarray, k: int, tags=(), mode="any", start=None, end=None) -> list[str]:
    keep = []
    for r in rows:
        have = set(r.tags)
        if tags and not (set(tags) <= have if mode == "all" else set(tags) & have):
            continue
        if start is not None and r.created_at < start or end is not None and r.created_at >= end:
            continue
        keep.append(r)
    if not keep:
        return []
    matrix = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in keep]).astype(np.float64)
    scores = (matrix @ np.asarray(q, dtype=np.float64)).astype(np.float32)  # exact: equal vectors tie exactly
    order = np.argsort(-scores, kind="stable")[:k]
    return [keep[i].id for i in order]


async def make_agents(store: Store, *names: str) -> list[str]:
    ids = []
    for name in names:
        agent = AgentState(id=new_id("agent"), name=name, model="offline", embedding="hash", system="s", blocks=[],
                           tools=[], max_steps=5, created_at=T0, metadata={})
        await store.insert_agent(agent)
        ids.append(agent.id)
    return ids


def run(coro):
    return asyncio.run(coro)




def backend(store: Store, path: str) -> SqliteVecStore:
    """The store's own vector store for "cache"; a second one on the same file for the other paths."""
    if path == "cache":
        return store.vectors
    other = SqliteVecStore(store.location.sqlite_path, cache_bytes=0, vec0=path == "vec0")
    other.scan_batch_rows = 64  # many batches even for these small agents
    return other


async def close_backends(store: Store, backends: dict[str, SqliteVecStore]) -> None:
    for b in backends.values():
        if b is not store.vectors:
            await b.close()
    await store.close()


def vec_rows(path: str, dim: int = DIM, agent_id: str | None = None) -> int:
    conn = connect_raw(path, vec=True)
    try:
        where, args = ("WHERE agent_id = ?", (agent_id,)) if agent_id else ("", ())
        return conn.execute(f"select count(*) from passages_vec_{dim} {where}", args).fetchone()[0]
    finally:
        conn.close()


def test_search_equals_exact_numpy_reference_with_filters_on_every_path(tmp_path):
    rng = np.random.default_rng(7)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        backends = {path: backend(store, path) for path in PATHS}
        try:
            a, b = await make_agents(store, "a", "b")
            await store.vectors.prepare(DIM)
            rows_a = rows_for(a, unit(rng, 600), rng)
            rows_b = rows_for(b, unit(rng, 300), rng)
            await store.insert_passages(rows_a)
            await store.insert_passages(rows_b)
            by_id = {r.id: np.frombuffer(r.embedding, dtype=np.float32) for r in rows_a}
            cases = [
                dict(), dict(tags=("red",)), dict(tags=("red", "blue")), dict(tags=("red", "blue"), mode="all"),
                dict(start=T0 + dt.timedelta(hours=100)), dict(end=T0 + dt.timedelta(hours=50)),
                dict(tags=("green",), start=T0 + dt.timedelta(hours=200), end=T0 + dt.timedelta(hours=400)),
                dict(tags=("nope",)),
            ]
            queries = [*unit(rng, 5), rows_a[10].embedding]  # the last one ties nothing but matches a row
            queries[-1] = np.frombuffer(queries[-1], dtype=np.float32)
            for q in queries:
                for case in cases:
                    for k in (1, 10, 700):
                        want = reference(rows_a, q, k, case.get("tags", ()), case.get("mode", "any"),
                                         case.get("start"), case.get("end"))
                        query = VectorQuery(a, q, top_k=k, tags=case.get("tags", ()),
                                            tag_match_mode=case.get("mode", "any"),
                                            start=case.get("start"), end=case.get("end"))
                        got = {path: await bk.search(query) for path, bk in backends.items()}
                        for path, hits in got.items():
                            assert [h.passage_id for h in hits] == want, (path, case, k)
                            exact = [float(by_id[h.passage_id] @ q) for h in hits]
                            np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-5)
                        for hits in got.values():  # the paths agree with each other (BLAS may round
                            assert [h.passage_id for h in hits] == [h.passage_id for h in got["cache"]]
                            np.testing.assert_allclose([h.score for h in hits], [h.score for h in got["cache"]],
                                                       rtol=0, atol=1e-6)  # the last bit by matrix shape)
            assert backends["cache"].stats["cache_searches"] > 0
            assert backends["cache"].stats["vec0_searches"] == backends["cache"].stats["scan_searches"] == 0
            assert backends["scan"].stats["scan_searches"] > 0
            assert backends["scan"].stats["cache_searches"] == backends["scan"].stats["vec0_searches"] == 0
            if "vec0" in backends:
                assert backends["vec0"].stats["vec0_searches"] > 0 and backends["vec0"].stats["scan_searches"] == 0
            # Agent b's passages never appear in a's results (and vice versa), on every path.
            q = unit(rng, 1)[0]
            for path, bk in backends.items():
                hits = await bk.search(VectorQuery(b, q, top_k=1000))
                assert [h.passage_id for h in hits] == reference(rows_b, q, 1000), path
        finally:
            await close_backends(store, backends)

    run(go())


def test_exact_ties_resolve_by_insertion_order_on_every_path(tmp_path):
    """Twenty vectors, each stored ten times, with creation times running backwards: the scan reads rows
    in index (created_at) order, the reverse of insertion, across many batches, and must still rank equal
    scores by insertion, like the cache and the reference."""
    rng = np.random.default_rng(9)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        backends = {path: backend(store, path) for path in PATHS}
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, np.repeat(unit(rng, 20), 10, axis=0), rng)
            rows = [dataclasses.replace(r, created_at=T0 - dt.timedelta(minutes=i)) for i, r in enumerate(rows)]
            await store.insert_passages(rows)
            for q in (np.frombuffer(rows[35].embedding, dtype=np.float32), unit(rng, 1)[0]):
                for k in (3, 10, 25, 200):
                    for tags in ((), ("red",)):
                        want = reference(rows, q, k, tags)
                        for path, bk in backends.items():
                            hits = await bk.search(VectorQuery(a, q, top_k=k, tags=tags))
                            assert [h.passage_id for h in hits] == want, (path, k, tags)
        finally:
            await close_backends(store, backends)

    run(go())


def test_top_k_beyond_vec0s_limit_is_answered_exactly_by_the_scan(tmp_path):
    rng = np.random.default_rng(2)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        backends = {path: backend(store, path) for path in PATHS}
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, VEC0_MAX_K + 100), rng)
            await store.insert_passages(rows)
            q = unit(rng, 1)[0]
            for path, bk in backends.items():
                hits = await bk.search(VectorQuery(a, q, top_k=VEC0_MAX_K + 50))
                assert [h.passage_id for h in hits] == reference(rows, q, VEC0_MAX_K + 50), path
            if "vec0" in backends:
                assert backends["vec0"].stats == {**backends["vec0"].stats, "vec0_searches": 0, "scan_searches": 1}
        finally:
            await close_backends(store, backends)

    run(go())


@pytest.mark.parametrize("path", PATHS)
def test_search_follows_inserts_deletes_and_agent_deletion(tmp_path, path):
    rng = np.random.default_rng(3)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        bk = backend(store, path)
        try:
            a, b = await make_agents(store, "a", "b")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, 150), rng)
            await store.insert_passages(rows)
            await store.insert_passages(rows_for(b, unit(rng, 20), rng))
            q = unit(rng, 1)[0]
            assert [h.passage_id for h in await bk.search(VectorQuery(a, q, top_k=5))] == reference(rows, q, 5)
            # An insert after the first search is found (the cache appends it, vec0 copies it in).
            closest = rows_for(a, q[None, :], rng, start=1000)
            await store.insert_passages(closest)
            rows += closest
            hits = await bk.search(VectorQuery(a, q, top_k=5))
            assert hits[0].passage_id == closest[0].id and hits[0].score == pytest.approx(1.0, abs=1e-6)
            if path == "cache":
                assert bk.stats["appends"] == 1
            # A deleted passage is never returned again.
            assert await store.delete_passage(a, closest[0].id)
            rows.pop()
            assert [h.passage_id for h in await bk.search(VectorQuery(a, q, top_k=5))] == reference(rows, q, 5)
            # A rolled-back insert leaves nothing behind.
            with pytest.raises(sa.exc.IntegrityError):
                await store.insert_passages([rows[0]])
            assert [h.passage_id for h in await bk.search(VectorQuery(a, q, top_k=200))] == reference(rows, q, 200)
            await store.delete_agent(b)
            assert await bk.search(VectorQuery(b, q, top_k=5)) == []
            assert [h.passage_id for h in await bk.search(VectorQuery(a, q, top_k=5))] == reference(rows, q, 5)
        finally:
            if bk is not store.vectors:
                await bk.close()
            await store.close()

    run(go())


@needs_vec0
def test_vec0_is_synced_lazily_for_inserts_and_deletes(tmp_path):
    """No trigger writes vec0: rows arrive and leave when the agent is next searched through vec0, and
    the rows of a deleted agent go with the next vec0 sync after deletes."""
    rng = np.random.default_rng(4)
    path = str(tmp_path / "v.db")

    async def go() -> None:
        store = await Store.open(path)
        vec0 = backend(store, "vec0")
        try:
            a, b = await make_agents(store, "a", "b")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, 50), rng)
            await store.insert_passages(rows)
            await store.insert_passages(rows_for(b, unit(rng, 20), rng))
            q = unit(rng, 1)[0]
            assert vec_rows(path) == 0  # nothing copied before a vec0 search
            for agent in (a, b):
                await vec0.search(VectorQuery(agent, q, top_k=1))
            assert vec_rows(path) == 70
            assert await store.delete_passage(a, rows[0].id)
            assert vec_rows(path, agent_id=a) == 50  # still there: deletes are applied lazily ...
            assert rows[0].id not in [h.passage_id for h in await vec0.search(VectorQuery(a, q, top_k=60))]
            assert vec_rows(path, agent_id=a) == 49  # ... by the agent's next vec0 search
            await store.delete_agent(b)
            assert vec_rows(path, agent_id=b) == 20
            assert await store.delete_passage(a, rows[1].id)
            await vec0.search(VectorQuery(a, q, top_k=1))
            assert vec_rows(path) == 48  # a's deleted passage and all of b's rows are gone
        finally:
            await vec0.close()
            await store.close()

    run(go())


@pytest.mark.parametrize("path", [p if p == "cache" else pytest.param(p, marks=pytest.mark.sqlite_only("SQLite's "
                                  "uncached search paths")) for p in PATHS])
def test_step_writer_inserts_are_searchable_on_every_path(client, db_path, path):
    agent = client.agents.create("sam")
    client.agents.messages.create(agent, '/call archival_memory_insert {"content": "The vault opens at dawn."}')
    hits = client.agents.passages.search(agent, "when does the vault open", top_k=1)
    assert hits[0].text == "The vault opens at dawn."
    embedder = client.runtime.embedder("hash")
    q = client._thread.run(embedder.embed(["when does the vault open"]))[0]
    other = backend(client.runtime.store, path)
    try:
        got = client._thread.run(other.search(VectorQuery(agent.id, q, top_k=1)))
    finally:
        if other is not client.runtime.store.vectors:
            client._thread.run(other.close())
    assert [h.passage_id for h in got] == [hits[0].id]


@needs_vec0
def test_lazy_vec0_copy_survives_a_reused_rowid_and_is_shared_between_connections(tmp_path):
    """vec0 gets new rows by rowid; after the agent's highest row is deleted SQLite may hand its rowid to
    the next insert, which must not be skipped. The copy state lives in the file: a second store sees it."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "lazy.db")

    async def go() -> None:
        store = await Store.open(path)
        first, second = SqliteVecStore(path, cache_bytes=0, vec0=True), SqliteVecStore(path, cache_bytes=0, vec0=True)
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, 10), rng)
            await store.insert_passages(rows)
            q = unit(rng, 1)[0]
            assert [h.passage_id for h in await first.search(VectorQuery(a, q, top_k=10))] == reference(rows, q, 10)
            last = rows.pop()
            assert await store.delete_passage(a, last.id)
            (newcomer,) = rows_for(a, q[None, :], rng, start=500)  # q itself: the best match of q
            await store.insert_passages([newcomer])
            rows.append(newcomer)
            conn = connect_raw(path)
            try:
                (reused,) = conn.execute("select rowid from passages where id = ?", (newcomer.id,)).fetchone()
                (gone_max,) = conn.execute("select max(max_rowid) from passages_vec_sync").fetchone()
            finally:
                conn.close()
            assert reused == gone_max  # the deleted row's rowid went to the newcomer
            hits = await second.search(VectorQuery(a, q, top_k=10))  # another connection syncs it
            assert hits[0].passage_id == newcomer.id and [h.passage_id for h in hits] == reference(rows, q, 10)
            assert [h.passage_id for h in await first.search(VectorQuery(a, q, top_k=10))] == reference(rows, q, 10)
        finally:
            await first.close()
            await second.close()
            await store.close()

    run(go())


def test_api_time_filters_and_bad_values(client):
    agent = client.agents.create("sam")
    client.agents.passages.create(agent, "the orchard was planted in spring")
    now = dt.datetime.now(dt.timezone.utc)
    assert client.agents.passages.search(agent, "orchard", start_datetime=(now - dt.timedelta(hours=1)).isoformat())
    assert not client.agents.passages.search(agent, "orchard", start_datetime=(now + dt.timedelta(hours=1)).isoformat())
    assert client.agents.passages.search(agent, "orchard", end_datetime=now + dt.timedelta(hours=1))
    assert not client.agents.passages.search(agent, "orchard", end_datetime="2000-01-01")
    with pytest.raises(InvalidArgumentError, match="not an ISO-8601 date"):
        client.agents.passages.search(agent, "orchard", start_datetime="yesterday")
    with pytest.raises(InvalidArgumentError, match="tag_match_mode"):
        client.agents.passages.search(agent, "orchard", tags=["x"], tag_match_mode="some")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        client.agents.passages.search(agent, "orchard", top_k=0)


@pytest.mark.parametrize("path", PATHS)
def test_a_query_of_another_dimension_is_an_error_not_a_best_match(tmp_path, path):
    rng = np.random.default_rng(5)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        bk = backend(store, path)
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            await store.insert_passages(rows_for(a, unit(rng, 10), rng))
            with pytest.raises(DimensionMismatchError, match=f"query vector has 64 dimensions but .* have {DIM}"):
                await bk.search(VectorQuery(a, unit(rng, 1, 64)[0]))
        finally:
            if bk is not store.vectors:
                await bk.close()
            await store.close()

    run(go())


def test_store_written_at_schema_2_gets_its_index_built_on_first_search(tmp_path):
    """Upgrade from the previous version: passages written before the version counters (and vec0) existed."""
    path = str(tmp_path / "v2.db")
    rng = np.random.default_rng(11)
    vectors = unit(rng, 40, 384)
    engine = sa.create_engine("sqlite://", module=sqlite_module(), creator=lambda: connect_raw(path),
                              poolclass=sa.pool.NullPool)
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    try:
        with engine.connect() as conn:
            assert migrate(conn, target=2) == [m.__name__ for m in MIGRATIONS[:2]]
        with engine.begin() as conn:
            v2 = sa.MetaData()
            v2.reflect(conn)
            assert "files" not in v2.tables and "file_id" not in v2.tables["passages"].c
            conn.execute(v2.tables["agents"].insert().values(
                id="agent-old", name="old", model="offline", embedding="hash", system="s", max_steps=5, metadata={},
                last_seq=0, created_at=T0, updated_at=T0, context_start_seq=0))
            conn.execute(v2.tables["passages"].insert(), [
                dict(id=f"p{i}", agent_id="agent-old", text=f"old passage {i}", embedding=v.tobytes(),
                     embedding_model="hash", tags=json.loads("[]"), created_at=T0) for i, v in enumerate(vectors)])
    finally:
        engine.dispose()

    with letta_nb.connect(path) as client:
        assert client.runtime.store.applied_migrations == [m.__name__ for m in MIGRATIONS[2:]]
        store = client.runtime.store
        q = vectors[17]
        want = [f"p{i}" for i in np.argsort(-(vectors @ q), kind="stable")[:3]]
        hits = client._thread.run(store.vectors.search(VectorQuery("agent-old", q, top_k=3)))
        assert want[0] == "p17" and [h.passage_id for h in hits] == want
        assert client.agents.passages.search("old", "old passage", top_k=40)  # and through the API
        assert client.agents.files.list("old") == []
        for path_name in PATHS[1:]:  # the scan reads the old rows; vec0 copies them in on first use
            other = backend(store, path_name)
            try:
                got = client._thread.run(other.search(VectorQuery("agent-old", q, top_k=3)))
                assert [h.passage_id for h in got] == want, path_name
            finally:
                client._thread.run(other.close())
    if HAVE_VEC0:
        assert vec_rows(path, 384) == 40
