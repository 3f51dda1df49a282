"""Archival memory: embed passages on insert, find them by meaning on search.

Passages are rows of the store; the vector index behind search (``store.vectors``, see
letta_nb/store/vector.py) follows those rows in the same transaction, whoever writes them, so this
module never writes the index itself. Before a vector of a new dimension is written, the index for that
dimension is prepared (so the row's trigger exists). Search embeds the query with the agent's embedder
and asks the vector store, which only ever compares the agent's own passages, exactly, and refuses a
query of another dimension than the stored vectors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np

from letta_nb.errors import InvalidArgumentError
from letta_nb.schemas import AgentState, Passage
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.records import PassageRecord
from letta_nb.store.store import Store
from letta_nb.store.vector import VectorQuery

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


class Archival:
    def __init__(self, store: Store, embedder_for: Callable[[AgentState], Any]):
        self._store = store
        self._embedder_for = embedder_for

    async def embed_passage(self, agent: AgentState, text: str, tags: list[str]) -> PassageRecord:
        """A new passage, embedded, ready for the step writer (its vector index is prepared first)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError("text must be a non-empty string")
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise InvalidArgumentError(f"tags must be a list of strings, got {tags!r}")
        embedder = self._embedder_for(agent)
        vector = np.asarray((await embedder.embed([text]))[0], dtype=np.float32)
        await self._store.vectors.prepare(int(vector.shape[0]))
        return PassageRecord(id=new_id("passage"), agent_id=agent.id, text=text, embedding=vector.tobytes(),
                             embedding_model=agent.embedding, tags=tuple(sorted(set(tags))), created_at=utcnow())

    async def insert(self, agent: AgentState, text: str, tags: list[str] | None = None) -> Passage:
        record = await self.embed_passage(agent, text, [] if tags is None else tags)
        await self._store.insert_passages([record])
        return record.passage()

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
    ) -> list[Passage]:
        """The agent's ``top_k`` passages closest to ``query`` (cosine), filtered by tags and creation time."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"query must be a non-empty string, got {query!r}")
        if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
            raise InvalidArgumentError(f"tags must be a list of strings, got {tags!r}")
        start, end = parse_time(start_datetime, "start_datetime"), parse_time(end_datetime, "end_datetime")
        embedder = self._embedder_for(agent)
        vector = np.asarray((await embedder.embed([query]))[0], dtype=np.float32)
        hits = await self._store.vectors.search(VectorQuery(
            agent.id, vector, top_k=top_k, tags=tuple(tags or ()), tag_match_mode=tag_match_mode, start=start, end=end,
        ))
        if not hits:
            return []
        found = await self._store.passages_by_id(agent.id, [h.passage_id for h in hits])
        # A passage deleted between the index read and this one is simply not returned.
        return [dataclasses.replace(found[h.passage_id], score=h.score) for h in hits if h.passage_id in found]
