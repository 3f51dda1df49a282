"""Archival memory: embed passages on insert, find them by meaning on search.

Passages are rows of the store; the vector index behind search (``store.vectors``, see
letta_nb/store/vector.py) follows those rows in the same transaction, whoever writes them, so this
module never writes the index itself. Before a vector of a new dimension is written, the index for that
dimension is prepared (so the row's trigger exists). Search embeds the query with the agent's embedder
and asks the vector store, which only ever compares the agent's own passages, exactly, and refuses a
query of another dimension than the stored vectors.

Search has three modes (runtime/search.py): ``"vector"`` (that exact search), ``"text"`` (the store's
full-text index, kept by the row's own transaction: store/fulltext.py) and ``"hybrid"`` (both, fused by
reciprocal rank fusion; the default). Recall search (``conversation_search``) has the same three over the
agent's messages (runtime/recall.py). Many texts are embedded in one call (:meth:`Archival.embed_passages`);
single inserts arriving together share a call through the embedder's micro-batcher (embeddings/microbatch.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.recall import EMBEDDED_ROLES, RecallVectors
from letta_nb.runtime.search import DEFAULT_SEARCH_MODE, candidates, check_search_mode, combine
from letta_nb.schemas import AgentState, Message, Passage
from letta_nb.store import fulltext
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.records import PassageRecord
from letta_nb.store.store import Store
from letta_nb.store.vector import TAG_MODES, VectorQuery

__all__ = ["Archival", "parse_time"]


def parse_time(value: Any, name: str) -> dt.datetime | None:
    """None, a datetime or an ISO-8601 string (as a model writes it) -> an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                f"{name}={value!r} is not an ISO-8601 date or datetime; expected e.g. '2024-05-01' or "
                "'2024-05-01T12:30:00Z'"
            ) from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise InvalidArgumentError(f"{name} must be a datetime or an ISO-8601 string, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _tags(tags: Any, name: str = "tags") -> list[str]:
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InvalidArgumentError(f"{name} must be a list of strings, got {tags!r}")
    return list(tags)


def _check_limit(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


ROLES = ("user", "assistant", "tool", "system")


class Archival:
    def __init__(self, store: Store, embedder_for: Callable[[AgentState], Any]):
        self._store = store
        self._embedder_for = embedder_for
        self._recall = RecallVectors(store)

    async def embed_passages(self, agent: AgentState, texts: Sequence[str], tags: list[str]) -> list[PassageRecord]:
        """New passages, embedded in one call (the embedder splits it into requests), in ``texts`` order."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InvalidArgumentError(f"texts must be a non-empty list of strings, got {texts!r}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise InvalidArgumentError(f"text must be a non-empty string; items {bad[:10]} of the list are not")
        tags = _tags(tags)
        vectors = np.asarray(await self._embedder_for(agent).embed(list(texts)), dtype=np.float32)
        await self._store.vectors.prepare(int(vectors.shape[1]))
        now, tag_tuple = utcnow(), tuple(sorted(set(tags)))
        return [PassageRecord(id=new_id("passage"), agent_id=agent.id, text=text, embedding=vector.tobytes(),
                              embedding_model=agent.embedding, tags=tag_tuple, created_at=now)
                for text, vector in zip(texts, vectors, strict=True)]

    async def embed_passage(self, agent: AgentState, text: str, tags: list[str]) -> PassageRecord:
        """A new passage, embedded, ready for the step writer (its vector index is prepared first)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError("text must be a non-empty string")
        return (await self.embed_passages(agent, [text], tags))[0]

    async def search(
        self,
        agent: AgentState,
        query: str,
        *,
        top_k: int = 5,
        tags: list[str] | None = None,
        tag_match_mode: str = "any",
        start_datetime: Any = None,
        end_datetime: Any = None,
        search_mode: str = DEFAULT_SEARCH_MODE,
    ) -> list[Passage]:
        """The agent's ``top_k`` passages best matching ``query`` (``search_mode``: runtime/search.py), filtered
        by tags and creation time; ``score`` is the cosine (vector), the relevance (text) or the fused score."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"query must be a non-empty string, got {query!r}")
        mode = check_search_mode(search_mode)
        _check_limit(top_k, "top_k")
        if tag_match_mode not in TAG_MODES:
            raise InvalidArgumentError(f"tag_match_mode must be 'any' or 'all', got {tag_match_mode!r}")
        tag_list = [] if tags is None else _tags(tags)
        start, end = parse_time(start_datetime, "start_datetime"), parse_time(end_datetime, "end_datetime")
        depth = top_k if mode != "hybrid" else candidates(top_k)
        vector_hits: list[tuple[str, float]] = []
        text_hits: list[tuple[str, float]] = []
        if mode != "text":
            embedder = self._embedder_for(agent)
            vector = np.asarray((await embedder.embed([query]))[0], dtype=np.float32)
            vector_hits = [(h.passage_id, h.score) for h in await self._store.vectors.search(VectorQuery(
                agent.id, vector, top_k=depth, tags=tuple(tag_list), tag_match_mode=tag_match_mode, start=start,
                end=end))]
        if mode != "vector":
            text_hits = await fulltext.search_passages(self._store.engine, fulltext.TextQuery(
                agent.id, tuple(fulltext.query_terms(query)), depth, tags=tuple(sorted(set(tag_list))),
                tag_match_mode=tag_match_mode, start=start, end=end))
        hits = combine(mode, vector_hits, text_hits, top_k)
        if not hits:
            return []
        found = await self._store.passages_by_id(agent.id, [h[0] for h in hits])
        # A passage deleted between the index read and this one is simply not returned.
        return [dataclasses.replace(found[key], score=score) for key, score in hits if key in found]

    async def search_messages(
        self,
        agent: AgentState,
        query: str,
        *,
        limit: int = 5,
        roles: Sequence[str] | None = None,
        start_datetime: Any = None,
        end_datetime: Any = None,
        search_mode: str = DEFAULT_SEARCH_MODE,
    ) -> list[Message]:
        """Recall search: the agent's ``limit`` messages (of ``roles``, default user and assistant) best matching
        ``query``, by ``search_mode`` as for :meth:`search`."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"query must be a non-empty string, got {query!r}")
        mode = check_search_mode(search_mode)
        _check_limit(limit, "limit")
        role_list = list(EMBEDDED_ROLES) if roles is None else _tags(roles, "roles")
        unknown = [r for r in role_list if r not in ROLES]
        if unknown:
            raise InvalidArgumentError(f"roles must be among {', '.join(map(repr, ROLES))}; got {unknown!r}")
        start, end = parse_time(start_datetime, "start_datetime"), parse_time(end_datetime, "end_datetime")
        depth = limit if mode != "hybrid" else candidates(limit)
        vector_hits: list[tuple[str, float]] = []
        text_hits: list[tuple[str, float]] = []
        if mode != "text":
            vector_hits = await self._recall.search(agent.id, agent.embedding, self._embedder_for(agent), query,
                                                    depth, roles=tuple(role_list), start=start, end=end)
        if mode != "vector":
            await self._store.catch_up_fulltext()  # SQLite indexes messages in batches: every committed one first
            text_hits = await fulltext.search_messages(self._store.engine, fulltext.TextQuery(
                agent.id, tuple(fulltext.query_terms(query)), depth, start=start, end=end, roles=tuple(role_list)))
        hits = combine(mode, vector_hits, text_hits, limit)
        if not hits:
            return []
        found = await fulltext.messages_by_id(self._store.engine, agent.id, [h[0] for h in hits])
        return [found[key] for key, _ in hits if key in found]
