"""The embedder protocol and what an embedding run reports.

Every embedder (``hash``, ``local``, ``openai``-compatible) has ``name``, ``dim`` and
``async embed(texts) -> ndarray`` of shape ``(len(texts), dim)``, float32, L2-normalised rows, in input
order. Invariants shared by all of them:

- an empty or whitespace-only text has no meaning to embed; ``embed`` refuses it with
  :class:`~letta_nb.errors.InvalidArgumentError` naming the indexes (a zero row must never reach a
  vector search). :meth:`embed_report` instead drops empties and says which it dropped;
- no chunk is silently skipped: ``embed`` either returns every row or raises
  :class:`~letta_nb.errors.EmbeddingError` listing the failed indexes; ``embed_report`` returns the rows
  that worked plus a reason per failed index.

Telemetry: embedders that call an endpoint report one :class:`BatchRecord` per HTTP request to an
optional ``on_batch`` callback and keep running totals in :class:`EmbedderStats`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from letta_nb.errors import EmbeddingError, InvalidArgumentError

__all__ = ["Embedder", "BatchRecord", "EmbedReport", "EmbedderStats", "blank_indexes", "check_texts", "check_types",
           "report_from"]


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class BatchRecord:
    """One request to an embedding endpoint, as telemetry sees it."""

    started_at: float  # epoch seconds
    inputs: int
    tokens: int  # estimated tokens sent
    duration_ms: float
    status: str  # 'ok' | 'error'
    retries: int  # attempts before this one for the same batch
    splits: int  # how many times this batch's inputs were halved before it was sent
    http_status: int | None
    embedder: str = ""  # the embedder's name (its spec), so one kernel's several embedders can be told apart


@dataclasses.dataclass
class EmbedderStats:
    """Running totals for one embedder (the ``embedding_config`` cache keeps one per spec)."""

    requests: int = 0
    inputs: int = 0
    tokens: int = 0
    errors: int = 0
    retries: int = 0
    throttled: int = 0  # 429 responses
    splits: int = 0  # batches halved after a token-limit error
    oversized: int = 0  # inputs split or truncated because they exceeded the per-input token limit
    failed_chunks: int = 0
    request_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class EmbedReport:
    """The result of :meth:`embed_report`: a row per embedded chunk, a reason per chunk that was not.

    ``indexes[k]`` is the input index whose vector is ``vectors[k]`` (ascending); ``empty`` lists inputs
    dropped for having no text; ``failed`` maps input index -> reason; ``truncated`` lists oversized inputs
    that were cut to the per-input limit and ``split`` those embedded as the mean of their pieces.
    """

    total: int
    dim: int
    vectors: np.ndarray
    indexes: list[int]
    empty: list[int] = dataclasses.field(default_factory=list)
    failed: dict[int, str] = dataclasses.field(default_factory=dict)
    truncated: list[int] = dataclasses.field(default_factory=list)
    split: list[int] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.empty

    def vector(self, index: int) -> np.ndarray | None:
        """The vector of input ``index`` or None when it was empty or failed."""
        pos = np.searchsorted(self.indexes, index)
        return self.vectors[pos] if pos < len(self.indexes) and self.indexes[pos] == index else None

    def raise_for_failures(self) -> np.ndarray:
        """All rows in input order, or :class:`EmbeddingError` if any chunk failed (empties are a caller error)."""
        if self.empty:
            raise InvalidArgumentError(_empty_message(self.empty))
        if self.failed:
            raise EmbeddingError(self.failed, self.total)
        return self.vectors

    def __repr__(self) -> str:
        return (f"EmbedReport(total={self.total}, embedded={len(self.indexes)}, empty={len(self.empty)}, "
                f"failed={len(self.failed)}, truncated={len(self.truncated)}, split={len(self.split)}, dim={self.dim})")


def check_types(texts: Sequence[str]) -> None:
    """Raise :class:`InvalidArgumentError` unless ``texts`` is a sequence of str (not one str)."""
    if isinstance(texts, str):
        raise InvalidArgumentError("texts must be a sequence of strings, got one str; wrap it in a list.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidArgumentError(f"texts must all be str; items {bad[:10]} are {type(texts[bad[0]]).__name__}.")


def blank_indexes(texts: Sequence[str]) -> list[int]:
    check_types(texts)
    return [i for i, t in enumerate(texts) if not t or t.isspace()]  # blank; strip() would copy every text


def _empty_message(empty: list[int]) -> str:
    shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
    return (f"cannot embed empty or whitespace-only text (input indexes {shown}); drop them first, "
            "or call embed_report() which skips them and says which it skipped.")


def check_texts(texts: Sequence[str]) -> None:
    """Raise :class:`InvalidArgumentError` naming empty inputs (the ``embed`` contract)."""
    empty = blank_indexes(texts)
    if empty:
        raise InvalidArgumentError(_empty_message(empty))


def report_from(texts: Sequence[str], vectors: np.ndarray, dim: int, empty: list[int]) -> EmbedReport:
    """An :class:`EmbedReport` for embedders that embed everything non-empty in one call."""
    dropped = set(empty)
    keep = [i for i in range(len(texts)) if i not in dropped]
    return EmbedReport(len(texts), dim, vectors.astype(np.float32, copy=False), keep, empty=empty)
