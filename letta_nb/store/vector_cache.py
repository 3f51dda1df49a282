"""Exact vector search in numpy: an agent's vectors held in memory, or streamed from the store in batches.

Why: sqlite-vec's vec0 scans with scalar C loops (no SIMD in the PyPI wheel); on the reference machine
a 100k x 384 search takes ~40 ms against ~10 ms for numpy's BLAS over the same matrix, and its
int8/bit quantizations were no faster or lost recall (see letta_nb/bench/vector.py). So the SQLite
backend keeps a bounded in-memory copy of each searched agent's vectors (:class:`AgentVectors`),
refreshed from the store by a version counter that triggers bump in the writing transaction (see
sqlite/vectors.py). An agent too large for the memory budget is searched by vec0 where sqlite-vec loads,
and otherwise by :func:`search_batches`: the agent's rows read in batches, a running top-k kept (ties
by rowid, as in the copy), so memory stays bounded by one batch whatever the agent's size.

Invariants: rows are in ``passages.rowid`` order (insertion order), and a winning row's score depends
only on the row and the query (rescored in float64, see :func:`top_k`), so ties resolve by insertion like
the exact reference (``argsort(-scores, kind="stable")`` over float64 scores) on the cache and the scan
alike, however the rows were batched; growth is amortised
(capacity doubles), so an agent that inserts one passage per step does not copy its whole matrix each time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from letta_nb.store.vector import VectorHit, VectorQuery

__all__ = ["AgentVectors", "Row", "SCORE_NOISE", "search_batches", "top_k"]

Row = tuple[int, str, bytes, Sequence[str], str]  # (rowid, id, embedding, tags, created_at)


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

    def append(self, rows: Sequence[Row]) -> None:
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
            for tag in r[3] or ():  # None: tags not read (a scan without a tag filter)
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
        if (start := query.start_text) is not None:
            after = created >= start.encode()
            mask = after if mask is None else mask & after
        if (end := query.end_text) is not None:
            before = created < end.encode()
            mask = before if mask is None else mask & before
        return None if mask is None else np.flatnonzero(mask)

    def search(self, query: VectorQuery) -> list[VectorHit]:
        q = query.vector
        rows = self.candidates(query)
        if rows is None:
            best, scores = top_k(self.matrix @ q, lambda i: self._matrix[i], q, query.top_k)
        else:
            if not rows.size:
                return []
            best, scores = top_k(self._matrix[rows] @ q, lambda i: self._matrix[rows[i]], q, query.top_k)
            best = rows[best]
        return [VectorHit(self.ids[i], s) for i, s in zip(best.tolist(), scores.tolist(), strict=True)]


# A float32 product's last bit depends on where its row sits in the matrix (BLAS kernels handle blocks of
# rows and the remainder differently, and threads split the rows), so two equal vectors can score one ulp
# apart (~6e-8 here), in one matrix or in two batches. Rows within this margin of the k-th score are
# rescored in float64 and rounded back: a score then depends only on the row and the query, equal
# vectors tie exactly, and ties go by insertion order on every path.
SCORE_NOISE = 1e-5


def top_k(scores: np.ndarray, rows_of: Callable[[np.ndarray], np.ndarray], q: np.ndarray, k: int,
          keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indexes into ``scores`` of the ``k`` best, their float32 scores), highest first, ties by ``keys``
    (default: the index). ``scores`` are float32 products; ``rows_of(indexes)`` gives those rows' vectors
    for the float64 rescoring of the candidates (see ``SCORE_NOISE``). Only the candidates are sorted."""
    n = scores.shape[0]
    if n > k:
        kth = np.partition(scores, n - k)[n - k]  # the k-th highest score
        chosen = np.flatnonzero(scores >= kth - SCORE_NOISE)
    else:
        chosen = np.arange(n)
    exact = (rows_of(chosen).astype(np.float64) @ q.astype(np.float64)).astype(np.float32)
    order = np.lexsort((chosen if keys is None else keys[chosen], -exact))[:k]
    return chosen[order], exact[order]


def search_batches(dim: int, batches: Iterable[Sequence[Row]], query: VectorQuery) -> list[VectorHit]:
    """The exact top-k of rows arriving in batches, in any order, holding one batch at a time.

    Each batch is filtered and scored like the in-memory copy (:class:`AgentVectors`' filters, then
    :func:`top_k`); its winners join the running best, and the best ``k`` are kept by score, then rowid:
    the in-memory copy's tie rule (insertion order), whatever order SQLite returns the rows in.
    """
    filtered = bool(query.tags) or query.start is not None or query.end is not None
    q = query.vector
    scores = np.zeros(0, dtype=np.float32)
    rowids = np.zeros(0, dtype=np.int64)
    ids: list[str] = []
    for rows in batches:
        if filtered:  # the copy's own filter code, so both paths filter alike
            batch = AgentVectors(dim, (0, 0))
            batch.append(rows)
            picked = batch.candidates(query)
            assert picked is not None
            rows = [rows[i] for i in picked.tolist()]
        if not rows:
            continue
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        batch_rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        won, won_scores = top_k(matrix @ q, matrix.__getitem__, q, query.top_k, keys=batch_rowids)
        scores = np.concatenate([scores, won_scores])
        rowids = np.concatenate([rowids, batch_rowids[won]])
        ids += [rows[i][1] for i in won.tolist()]
        keep = np.lexsort((rowids, -scores))[: query.top_k]  # scores are exact now: sort the few winners
        scores, rowids, ids = scores[keep], rowids[keep], [ids[i] for i in keep.tolist()]
    return [VectorHit(i, s) for i, s in zip(ids, scores.tolist(), strict=True)]
