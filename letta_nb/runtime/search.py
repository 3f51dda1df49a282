"""Search modes and how two rankings become one: reciprocal rank fusion.

``search_mode`` of archival and recall search:

- ``"vector"``: nearest by cosine similarity, exact (store/vector.py); scores are similarities;
- ``"text"``: full-text relevance (BM25 on SQLite, ``ts_rank`` on PostgreSQL: store/fulltext.py);
- ``"hybrid"`` (the default): both rankings, each ``candidates`` deep, fused by reciprocal rank fusion
  (Cormack et al. 2009): ``score(d) = sum over rankings of 1 / (RRF_K + rank(d))``. RRF needs no score
  calibration between BM25 and cosine, and a passage ranked well by either survives. Measured by
  ``python -m letta_nb.bench retrieval`` (the README has the table): hybrid beat vector-only recall@10 for
  both the ``hash`` and the ``local`` embedder, so it is the default.

Filters (tags, time, roles) are applied inside each ranking, so fusion only ever sees allowed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from letta_nb.errors import InvalidArgumentError

__all__ = ["DEFAULT_SEARCH_MODE", "RRF_K", "SEARCH_MODES", "SearchMode", "candidates", "check_search_mode", "combine",
           "fuse"]

SearchMode = Literal["hybrid", "vector", "text"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "text")
DEFAULT_SEARCH_MODE: SearchMode = "hybrid"
RRF_K = 60  # the constant of the original paper; larger flattens the head of each ranking
MIN_CANDIDATES = 50  # each ranking's depth in hybrid mode: at least this, or 4x top_k


def check_search_mode(mode: object) -> SearchMode:
    """``mode`` if it is one of :data:`SEARCH_MODES`, else InvalidArgumentError naming them."""
    if mode not in SEARCH_MODES:
        raise InvalidArgumentError(
            f"search_mode={mode!r} is not a search mode; expected one of {', '.join(map(repr, SEARCH_MODES))} "
            "('hybrid' fuses full-text and vector rankings, the default).")
    return mode


def candidates(top_k: int) -> int:
    """How deep each ranking is read before fusing ``top_k`` results."""
    return max(MIN_CANDIDATES, 4 * top_k)


def fuse(rankings: Sequence[Sequence[str]], top_k: int, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of id rankings (best first) -> ``(id, fused score)``, best first; ties keep the
    order of the earlier ranking, then of the later."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    order = sorted(scores.items(), key=lambda item: -item[1])  # stable: first-seen order breaks ties
    return order[:top_k]


def combine(mode: SearchMode, vector: list[tuple[str, float]], text: list[tuple[str, float]],
            top_k: int) -> list[tuple[str, float]]:
    """The ``(id, score)`` results of ``mode`` from the vector and text rankings it ran."""
    if mode == "vector":
        return vector[:top_k]
    if mode == "text":
        return text[:top_k]
    return fuse([[key for key, _ in vector], [key for key, _ in text]], top_k)
