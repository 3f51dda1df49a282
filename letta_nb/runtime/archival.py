"""Archival memory: embed passages on insert, find them by meaning on search.

This version searches exactly (a numpy matmul over the agent's passages, which are already
L2-normalised), filtered by tags. It is correct and simple; the vector-store work replaces the scan
with sqlite-vec without changing this interface. Passages of one agent are never compared with another's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from letta_nb.errors import InvalidArgumentError
from letta_nb.schemas import AgentState, Passage
from letta_nb.store.store import Store, new_id, passage_from_row, utcnow

__all__ = ["Archival"]


class Archival:
    def __init__(self, store: Store, embedder_for: Callable[[str], Any]):
        self._store = store
        self._embedder_for = embedder_for

    async def make_row(self, agent: AgentState, text: str, tags: list[str]) -> dict[str, Any]:
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError("text must be a non-empty string")
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise InvalidArgumentError(f"tags must be a list of strings, got {tags!r}")
        embedder = self._embedder_for(agent.embedding)
        vector = (await embedder.embed([text]))[0]
        return {
            "id": new_id("passage"),
            "agent_id": agent.id,
            "text": text,
            "embedding": np.asarray(vector, dtype=np.float32).tobytes(),
            "embedding_model": agent.embedding,
            "tags": sorted(set(tags)),
            "created_at": utcnow(),
        }

    async def insert(self, agent: AgentState, text: str, tags: list[str] | None = None) -> Passage:
        row = await self.make_row(agent, text, [] if tags is None else tags)
        await self._store.insert_passages([row])
        return Passage(row["id"], agent.id, text, tuple(row["tags"]), row["created_at"])

    async def search(
        self, agent: AgentState, query: str, *, top_k: int = 5, tags: list[str] | None = None, tag_match_mode: str = "any"
    ) -> list[Passage]:
        if tag_match_mode not in ("any", "all"):
            raise InvalidArgumentError(f"tag_match_mode must be 'any' or 'all', got {tag_match_mode!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
        rows = await self._store.passage_rows(agent.id, with_embeddings=True)
        if tags:
            wanted = set(tags)
            match = (lambda have: wanted <= have) if tag_match_mode == "all" else (lambda have: bool(wanted & have))
            rows = [r for r in rows if match(set(r.tags or ()))]
        if not rows:
            return []
        embedder = self._embedder_for(agent.embedding)
        q = np.asarray((await embedder.embed([query]))[0], dtype=np.float32)
        matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype=np.float32).reshape(len(rows), -1)
        if matrix.shape[1] != q.shape[0]:
            raise InvalidArgumentError(
                f"archival passages of agent {agent.name!r} have dimension {matrix.shape[1]} but the query "
                f"embedding from {agent.embedding!r} has {q.shape[0]}; re-embed the passages or use the same embedder."
            )
        scores = matrix @ q
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [passage_from_row(rows[i], float(scores[i])) for i in order]
