"""The vector-store interface: nearest passages of one agent, by cosine similarity, with filters.

A backend answers one question (:meth:`VectorStore.search`) and keeps one promise: a search sees
exactly the passages committed before it, whoever wrote them (the step writer, file ingestion, the API,
a cascade from deleting an agent). The vector lives in the row (``passages.embedding``); the SQLite
backend brings its in-memory copies and sqlite-vec tables up to date from trigger-bumped version
counters before each search (see sqlite/vectors.py), a PostgreSQL backend would index the row itself
(pgvector). So callers insert and delete passages through the store and never touch an index, and an
index can always be rebuilt from ``passages.embedding``.

Semantics every backend shares (tests compare them with an exact numpy reference):
- scores are cosine similarities of L2-normalised vectors (higher is closer); results are ordered by
  score, ties by insertion order; only the agent's own passages are ever scanned;
- ``tags`` with ``tag_match_mode`` ``"any"`` (at least one) or ``"all"``; ``start``/``end`` bound
  ``created_at`` (inclusive start, exclusive end, UTC);
- a query whose dimension differs from the agent's stored vectors is a :class:`DimensionMismatchError`,
  never a silent best match.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from letta_nb.errors import InvalidArgumentError
from letta_nb.store.ids import sql_time

__all__ = ["VectorQuery", "VectorHit", "VectorStore", "TAG_MODES"]

TAG_MODES = ("any", "all")


@dataclass(frozen=True)
class VectorQuery:
    agent_id: str
    vector: np.ndarray  # (dim,) float32, L2-normalised
    top_k: int = 5
    tags: tuple[str, ...] = ()
    tag_match_mode: str = "any"
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.tag_match_mode not in TAG_MODES:
            raise InvalidArgumentError(f"tag_match_mode must be 'any' or 'all', got {self.tag_match_mode!r}")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dt.datetime):
                raise InvalidArgumentError(f"{name} must be a datetime, got {value!r}")
        vector = np.ascontiguousarray(self.vector, dtype=np.float32)
        if vector.ndim != 1 or not vector.size:
            raise InvalidArgumentError(f"the query vector must be one non-empty row, got shape {vector.shape}")
        object.__setattr__(self, "vector", vector)
        object.__setattr__(self, "tags", tuple(sorted(set(self.tags))))

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    @property
    def start_text(self) -> str | None:
        return None if self.start is None else sql_time(self.start)

    @property
    def end_text(self) -> str | None:
        return None if self.end is None else sql_time(self.end)


class VectorHit(NamedTuple):
    passage_id: str
    score: float  # cosine similarity


@runtime_checkable
class VectorStore(Protocol):
    async def prepare(self, dim: int) -> None:
        """Make sure vectors of this dimension are indexed from now on (idempotent, cheap when done)."""

    async def search(self, query: VectorQuery) -> list[VectorHit]:
        """The agent's ``top_k`` nearest passages that pass the filters, closest first."""

    async def close(self) -> None:
        """Release connections and caches."""
