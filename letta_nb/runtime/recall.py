"""Recall search (``conversation_search``): an agent's past messages by words and by meaning.

The words half is the store's full-text index over ``messages`` (store/fulltext.py), kept by each step's
own transaction. The meaning half embeds messages *lazily, at search time*, never in a step: a step's
commit stays as cheap as before (the step benchmark holds its overhead under 2 ms), and an agent nobody
searches costs nothing. Messages are append-only per agent (only deleting the agent removes them, and
``seq`` only grows), so each process keeps, per agent, the vectors of the user and assistant messages up
to the highest ``seq`` it has read, and a search embeds only what was committed since (one batched call).
The copy is exact: every message is scored against the query (store/vector_cache.top_k, the same ties
by insertion order as archival search). A process that restarts re-embeds on its first search.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from letta_nb.schemas import Message
from letta_nb.store.vector_cache import top_k

__all__ = ["RecallVectors", "EMBEDDED_ROLES"]

EMBEDDED_ROLES = ("user", "assistant")  # what a person said; tool results and system text are words-only
MAX_AGENTS = 64  # agents whose message vectors a process keeps (least recently searched dropped first)


@dataclass
class _Agent:
    embedder: str
    last_seq: int = -1
    ids: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    created: list[dt.datetime] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # batches, concatenated on search
    matrix: np.ndarray | None = None


class RecallVectors:
    """Per-process vectors of agents' messages, brought up to date on each search."""

    def __init__(self, store: Any):
        self._store = store
        self._agents: OrderedDict[str, _Agent] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _refresh(self, agent_id: str, embedder_name: str, embedder: Any) -> _Agent:
        entry = self._agents.get(agent_id)
        if entry is None or entry.embedder != embedder_name:
            entry = _Agent(embedder_name)
            self._agents[agent_id] = entry
        self._agents.move_to_end(agent_id)
        while len(self._agents) > MAX_AGENTS:
            self._agents.popitem(last=False)
        new: list[Message] = await self._store.load_messages(agent_id, start_seq=entry.last_seq + 1)
        if not new:
            return entry
        keep = [m for m in new if m.role in EMBEDDED_ROLES and m.text and not m.text.isspace()]
        if keep:
            vectors = np.asarray(await embedder.embed([m.text for m in keep]), dtype=np.float32)
            entry.rows.append(vectors)
            entry.matrix = None
            entry.ids += [m.id for m in keep]
            entry.roles += [m.role for m in keep]
            entry.created += [m.created_at for m in keep]
        entry.last_seq = max(m.seq for m in new)
        return entry

    async def search(self, agent_id: str, embedder_name: str, embedder: Any, query: str, limit: int, *,
                     roles: tuple[str, ...], start: dt.datetime | None, end: dt.datetime | None,
                     ) -> list[tuple[str, float]]:
        """``(message id, cosine similarity)`` of the agent's nearest messages among ``roles``, best first."""
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        async with lock:  # two searches of one agent embed its new messages once
            entry = await self._refresh(agent_id, embedder_name, embedder)
        if not entry.ids:
            return []
        if entry.matrix is None:
            entry.matrix = np.concatenate(entry.rows) if len(entry.rows) > 1 else entry.rows[0]
            entry.rows = [entry.matrix]
        allowed = np.array([(not roles or r in roles) and (start is None or c >= start) and (end is None or c < end)
                            for r, c in zip(entry.roles, entry.created, strict=True)], dtype=bool)
        rows = np.flatnonzero(allowed)
        if not rows.size:
            return []
        q = np.asarray((await embedder.embed([query]))[0], dtype=np.float32)
        matrix = entry.matrix
        best, scores = top_k(matrix[rows] @ q, lambda i: matrix[rows[i]], q, min(limit, int(rows.size)))
        return [(entry.ids[rows[i]], float(s)) for i, s in zip(best.tolist(), scores.tolist(), strict=True)]
