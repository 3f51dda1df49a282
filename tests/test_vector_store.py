"""Archival search equals an exact numpy reference, through both paths of the SQLite vector store.

A seeded dataset (two agents, tags, creation times spread over days) is written as real passage rows
to a real store file. Every query runs through the in-memory path (the default) and the sqlite-vec vec0
path (``cache_bytes=0``) and must return the ids of ``argsort(-X @ q, kind="stable")`` over the
agent's filtered rows, with the same scores. Then the index must follow inserts (also those the step
writer makes; vec0 copies them lazily, even into a reused rowid), deletes and agent deletion, refuse a
query of the wrong dimension, and build itself for a store written before it existed (schema version 2).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import numpy as np
import pytest
import sqlalchemy as sa

import letta_nb
from letta_nb.errors import DimensionMismatchError, InvalidArgumentError
from letta_nb.schemas import AgentState
from letta_nb.store.migrations import MIGRATIONS, migrate
from letta_nb.store.sqlite_driver import connect_raw
from letta_nb.store.sqlite_vec import SqliteVecStore
from letta_nb.store.store import Store, new_id
from letta_nb.store.vector import VectorQuery

DIM = 32
TAGS = ("red", "green", "blue")
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows_for(agent_id: str, vectors: np.ndarray, rng: np.random.Generator, start: int = 0) -> list[dict]:
    return [
        {"id": f"p-{agent_id}-{start + i}", "agent_id": agent_id, "text": f"passage {start + i}",
         "embedding": v.tobytes(), "embedding_model": "test", "created_at": T0 + dt.timedelta(hours=start + i),
         "tags": sorted({TAGS[j] for j in range(3) if rng.random() < 0.4})}
        for i, v in enumerate(vectors)
    ]


def reference(rows: list[dict], q: np.ndarray, k: int, tags=(), mode="any", start=None, end=None) -> list[str]:
    keep = []
    for r in rows:
        have = set(r["tags"])
        if tags and not (set(tags) <= have if mode == "all" else set(tags) & have):
            continue
        if start is not None and r["created_at"] < start or end is not None and r["created_at"] >= end:
            continue
        keep.append(r)
    if not keep:
        return []
    matrix = np.stack([np.frombuffer(r["embedding"], dtype=np.float32) for r in keep])
    order = np.argsort(-(matrix @ q), kind="stable")[:k]
    return [keep[i]["id"] for i in order]


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


def test_search_equals_exact_numpy_reference_with_filters_on_both_paths(tmp_path):
    rng = np.random.default_rng(7)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        vec0 = SqliteVecStore(store.location.sqlite_path, cache_bytes=0)
        try:
            a, b = await make_agents(store, "a", "b")
            await store.vectors.prepare(DIM)
            rows_a = rows_for(a, unit(rng, 600), rng)
            rows_b = rows_for(b, unit(rng, 300), rng)
            await store.insert_passages(rows_a)
            await store.insert_passages(rows_b)
            cases = [
                dict(), dict(tags=("red",)), dict(tags=("red", "blue")), dict(tags=("red", "blue"), mode="all"),
                dict(start=T0 + dt.timedelta(hours=100)), dict(end=T0 + dt.timedelta(hours=50)),
                dict(tags=("green",), start=T0 + dt.timedelta(hours=200), end=T0 + dt.timedelta(hours=400)),
                dict(tags=("nope",)),
            ]
            for q in unit(rng, 6):
                for case in cases:
                    for k in (1, 10, 700):
                        want = reference(rows_a, q, k, case.get("tags", ()), case.get("mode", "any"),
                                         case.get("start"), case.get("end"))
                        query = VectorQuery(a, q, top_k=k, tags=case.get("tags", ()),
                                            tag_match_mode=case.get("mode", "any"),
                                            start=case.get("start"), end=case.get("end"))
                        for backend in (store.vectors, vec0):
                            hits = await backend.search(query)
                            assert [h.passage_id for h in hits] == want, (case, k, backend.stats)
                            by_id = {r["id"]: np.frombuffer(r["embedding"], dtype=np.float32) for r in rows_a}
                            exact = [float(by_id[h.passage_id] @ q) for h in hits]
                            np.testing.assert_allclose([h.score for h in hits], exact, atol=1e-5)
            assert store.vectors.stats["cache_searches"] > 0 and store.vectors.stats["vec0_searches"] == 0
            assert vec0.stats["vec0_searches"] > 0 and vec0.stats["cache_searches"] == 0
            # Agent b's passages never appear in a's results (and vice versa).
            hits = await vec0.search(VectorQuery(b, unit(rng, 1)[0], top_k=1000))
            assert len(hits) == 300 and {h.passage_id for h in hits} == {r["id"] for r in rows_b}
        finally:
            await vec0.close()
            await store.close()

    run(go())


def test_index_follows_inserts_deletes_and_agent_deletion(tmp_path):
    rng = np.random.default_rng(3)
    path = str(tmp_path / "v.db")

    def vec_rows() -> int:
        conn = connect_raw(path)
        try:
            return conn.execute(f"select count(*) from passages_vec_{DIM}").fetchone()[0]
        finally:
            conn.close()

    async def go() -> None:
        store = await Store.open(path)
        vec0 = SqliteVecStore(path, cache_bytes=0)
        try:
            a, b = await make_agents(store, "a", "b")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, 50), rng)
            await store.insert_passages(rows)
            await store.insert_passages(rows_for(b, unit(rng, 20), rng))
            q = unit(rng, 1)[0]
            assert [h.passage_id for h in await store.vectors.search(VectorQuery(a, q, top_k=5))] == reference(rows, q, 5)
            # vec0 takes new passages in lazily: only a vec0 search of the agent copies them.
            assert vec_rows() == 0
            for agent in (a, b):
                await vec0.search(VectorQuery(agent, q, top_k=1))
            assert vec_rows() == 70
            # An insert after the cache was loaded is appended, not missed.
            closest = rows_for(a, q[None, :], rng, start=1000)
            await store.insert_passages(closest)
            rows += closest
            hits = await store.vectors.search(VectorQuery(a, q, top_k=5))
            assert hits[0].passage_id == closest[0]["id"] and hits[0].score == pytest.approx(1.0, abs=1e-6)
            assert store.vectors.stats["appends"] == 1
            # A delete is seen (the copy reloads) and the vec0 row goes with the passage.
            assert [h.passage_id for h in await vec0.search(VectorQuery(a, q, top_k=1))] == [closest[0]["id"]]
            assert vec_rows() == 71
            assert await store.delete_passage(a, closest[0]["id"])
            rows.pop()
            assert vec_rows() == 70
            assert [h.passage_id for h in await store.vectors.search(VectorQuery(a, q, top_k=5))] == reference(rows, q, 5)
            # A rolled-back insert leaves no vector behind.
            with pytest.raises(sa.exc.IntegrityError):
                await store.insert_passages([rows[0]])
            assert vec_rows() == 70
            await store.delete_agent(b)
            assert vec_rows() == 50
        finally:
            await vec0.close()
            await store.close()

    run(go())


def test_step_writer_inserts_are_searchable_on_both_paths(client, db_path):
    agent = client.agents.create("sam")
    client.agents.messages.create(agent, '/call archival_memory_insert {"content": "The vault opens at dawn."}')
    hits = client.agents.passages.search(agent, "when does the vault open", top_k=1)
    assert hits[0].text == "The vault opens at dawn."
    embedder = client.runtime.embedder("hash")
    q = client._thread.run(embedder.embed(["when does the vault open"]))[0]
    vec0 = SqliteVecStore(str(db_path), cache_bytes=0)
    try:
        got = client._thread.run(vec0.search(VectorQuery(agent.id, q, top_k=1)))
    finally:
        client._thread.run(vec0.close())
    assert [h.passage_id for h in got] == [hits[0].id]


def test_lazy_vec0_copy_survives_a_reused_rowid_and_is_shared_between_connections(tmp_path):
    """vec0 gets new rows by rowid; after the agent's highest row is deleted SQLite may hand its rowid to
    the next insert, which must not be skipped. The copy state lives in the file: a second store sees it."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "lazy.db")

    async def go() -> None:
        store = await Store.open(path)
        first, second = SqliteVecStore(path, cache_bytes=0), SqliteVecStore(path, cache_bytes=0)
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            rows = rows_for(a, unit(rng, 10), rng)
            await store.insert_passages(rows)
            q = unit(rng, 1)[0]
            assert [h.passage_id for h in await first.search(VectorQuery(a, q, top_k=10))] == reference(rows, q, 10)
            last = rows.pop()
            assert await store.delete_passage(a, last["id"])
            (newcomer,) = rows_for(a, q[None, :], rng, start=500)  # q itself: the best match of q
            await store.insert_passages([newcomer])
            rows.append(newcomer)
            conn = connect_raw(path)
            try:
                (reused,) = conn.execute("select rowid from passages where id = ?", (newcomer["id"],)).fetchone()
                (gone_max,) = conn.execute("select max(max_rowid) from passages_vec_sync").fetchone()
            finally:
                conn.close()
            assert reused == gone_max  # the deleted row's rowid went to the newcomer
            hits = await second.search(VectorQuery(a, q, top_k=10))  # another connection syncs it
            assert hits[0].passage_id == newcomer["id"] and [h.passage_id for h in hits] == reference(rows, q, 10)
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


def test_a_query_of_another_dimension_is_an_error_not_a_best_match(tmp_path):
    rng = np.random.default_rng(5)

    async def go() -> None:
        store = await Store.open(tmp_path / "v.db")
        vec0 = SqliteVecStore(store.location.sqlite_path, cache_bytes=0)
        try:
            (a,) = await make_agents(store, "a")
            await store.vectors.prepare(DIM)
            await store.insert_passages(rows_for(a, unit(rng, 10), rng))
            for backend in (store.vectors, vec0):
                with pytest.raises(DimensionMismatchError, match=f"query vector has 64 dimensions but .* have {DIM}"):
                    await backend.search(VectorQuery(a, unit(rng, 1, 64)[0]))
        finally:
            await vec0.close()
            await store.close()

    run(go())


def test_store_written_at_schema_2_gets_its_index_built_on_first_search(tmp_path):
    """Upgrade from the previous version: passages written before vec0 tables and triggers existed."""
    path = str(tmp_path / "v2.db")
    rng = np.random.default_rng(11)
    vectors = unit(rng, 40, 384)
    engine = sa.create_engine("sqlite://", creator=lambda: connect_raw(path), poolclass=sa.pool.NullPool)
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
        hits = client._thread.run(store.vectors.search(VectorQuery("agent-old", q, top_k=3)))
        assert hits[0].passage_id == "p17"
        assert [h.passage_id for h in hits] == [f"p{i}" for i in np.argsort(-(vectors @ q), kind="stable")[:3]]
        assert client.agents.passages.search("old", "old passage", top_k=40)  # and through the API
        assert client.agents.files.list("old") == []
        vec0 = SqliteVecStore(path, cache_bytes=0)  # the vec0 path copies the old passages in on first use
        try:
            got = client._thread.run(vec0.search(VectorQuery("agent-old", q, top_k=3)))
            assert [h.passage_id for h in got] == [h.passage_id for h in hits]
        finally:
            client._thread.run(vec0.close())
    conn = connect_raw(path)
    try:
        assert conn.execute("select count(*) from passages_vec_384").fetchone()[0] == 40
    finally:
        conn.close()
