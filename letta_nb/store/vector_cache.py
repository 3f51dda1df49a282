"""An agent's passage vectors held in memory, searched exactly with one matrix-vector product.

Why: sqlite-vec's vec0 scans with scalar C loops (no SIMD in the PyPI wheel); on the reference machine
a 100k x 384 search takes ~40 ms against ~10 ms for numpy's BLAS over the same matrix, and its
int8/bit quantizations were no faster or lost recall (see letta_nb/bench/vector.py). So the SQLite
backend keeps a bounded in-memory copy of each searched agent's vectors, refreshed from the store by
a version counter that triggers bump in the writing transaction (see sqlite_vec.py), and uses vec0
only for agents that do not fit the memory budget.

Invariants: rows are in ``passages.rowid`` order (insertion order), so ties resolve like the exact
reference (``argsort(-scores, kind="stable")``); growth is amortised (capacity doubles), so an agent
that inserts one passage per step does not copy its whole matrix each time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from letta_nb.store.vector import VectorHit, VectorQuery

__all__ = ["AgentVectors", "top_k_exact"]


class AgentVectors:
    """The vectors, ids, tags and creation times of one agent's passages (one dimension)."""

    def __init__(self, dim: int, version: tuple[int, int]):
        self.dim = dim
        self.version = version
        self.max_rowid = 0
        self.n = 0
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self.ids: list[str] = []
        self._created = np.zeros(0, dtype="S26")
        self._tag_rows: dict[str, list[int]] = defaultdict(list)

    @property
    def nbytes(self) -> int:
        return self._matrix.nbytes + self._created.nbytes + 64 * len(self.ids)

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix[: self.n]

    def append(self, rows: Sequence[tuple[int, str, bytes, Sequence[str], str]]) -> None:
        """Add ``(rowid, id, embedding, tags, created_at)`` rows, rowids ascending and above ``max_rowid``."""
        if not rows:
            return
        need = self.n + len(rows)
        if need > self._matrix.shape[0]:
            capacity = max(need, 2 * self._matrix.shape[0], 64)
            grown = np.empty((capacity, self.dim), dtype=np.float32)
            grown[: self.n] = self._matrix[: self.n]
            self._matrix = grown
            created = np.empty(capacity, dtype="S26")
            created[: self.n] = self._created[: self.n]
            self._created = created
        block = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        self._matrix[self.n : need] = block
        self._created[self.n : need] = [r[4].encode() for r in rows]
        for offset, r in enumerate(rows):
            self.ids.append(r[1])
            for tag in r[3]:
                self._tag_rows[tag].append(self.n + offset)
        self.n = need
        self.max_rowid = rows[-1][0]

    def candidates(self, query: VectorQuery) -> np.ndarray | None:
        """Row indexes passing the filters (ascending), or None when there are no filters."""
        mask: np.ndarray | None = None
        if query.tags:
            lists = [self._tag_rows.get(t, ()) for t in query.tags]
            if query.tag_match_mode == "any":
                mask = np.zeros(self.n, dtype=bool)
                for rows in lists:
                    mask[list(rows)] = True
            else:
                mask = np.ones(self.n, dtype=bool)
                for rows in lists:
                    keep = np.zeros(self.n, dtype=bool)
                    keep[list(rows)] = True
                    mask &= keep
        created = self._created[: self.n]
        if query.start is not None:
            after = created >= query.start_text.encode()
            mask = after if mask is None else mask & after
        if query.end is not None:
            before = created < query.end_text.encode()
            mask = before if mask is None else mask & before
        return None if mask is None else np.flatnonzero(mask)

    def search(self, query: VectorQuery) -> list[VectorHit]:
        rows = self.candidates(query)
        if rows is None:
            scores = self.matrix @ query.vector
            best = top_k_exact(scores, query.top_k)
        else:
            if not rows.size:
                return []
            scores = self._matrix[rows] @ query.vector
            best = top_k_exact(scores, query.top_k)
            scores, best = scores[best], rows[best]
            return [VectorHit(self.ids[i], float(s)) for i, s in zip(best.tolist(), scores.tolist())]
        return [VectorHit(self.ids[i], float(scores[i])) for i in best.tolist()]


def top_k_exact(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the ``k`` highest scores, highest first, ties by index: ``argsort(-s, stable)[:k]``
    without sorting everything (a partition finds the k-th score; only the winners are sorted)."""
    n = scores.shape[0]
    if n <= k:
        return np.argsort(-scores, kind="stable")
    kth = np.partition(scores, n - k)[n - k]  # the k-th highest score
    better = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[: k - better.size]
    chosen = np.concatenate([better, tied])
    return chosen[np.lexsort((chosen, -scores[chosen]))]
