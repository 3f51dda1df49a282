"""Token counts for embedding requests: a cheap estimate for packing, exact BPE counts where it matters.

Endpoints limit tokens per input and per request. Counting every chunk exactly with tiktoken costs about
as much CPU as the requests take on the wire (~7 MB/s of text here), so the embedder packs batches by the
estimate ``ceil(utf8_bytes / 4)`` (what the runtime's context budget uses too) and counts exactly only
inputs whose estimate is near the per-input limit; a server that still says "too many tokens" gets the
batch split in half (see :mod:`letta_nb.embeddings.openai`).

Exact counts use tiktoken's ``cl100k_base`` (the tokenizer of OpenAI's embedding models). tiktoken
downloads its BPE file on first use, which fails offline; so we look for the file where tiktoken caches it
(``TIKTOKEN_CACHE_DIR`` / ``DATA_GYM_CACHE_DIR`` / the temp dir) and in the copy bundled with
``llama-index-core`` (a dependency), and load it from there. When none is found, :class:`TokenCounter`
falls back to a deterministic conservative estimate (``utf8 bytes / 3``) and ``exact`` is False.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TokenCounter", "estimate_many", "estimate_tokens", "load_encoding"]

_BPE_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_lock = threading.Lock()
_encodings: dict[str, Any] = {}


def estimate_tokens(text: str) -> int:
    """The packing estimate: about four UTF-8 bytes a token (English prose is ~4.5, code ~4)."""
    n = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))  # isascii() is O(1)
    return (n + 3) // 4


def estimate_many(texts: Sequence[str]) -> np.ndarray:
    """:func:`estimate_tokens` of every text as an int64 array, in C loops (an embed call plans tens of
    thousands of texts): ``len`` where a text is ASCII, an encode only where it is not."""
    n = len(texts)
    lengths = np.fromiter(map(len, texts), np.int64, n)
    for i in np.flatnonzero(~np.fromiter(map(str.isascii, texts), bool, n)).tolist():
        lengths[i] = len(texts[i].encode("utf-8", "surrogatepass"))
    return (lengths + 3) // 4


def _cache_dirs() -> list[Path]:
    dirs = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR"),
            os.path.join(tempfile.gettempdir(), "data-gym-cache")]
    spec = importlib.util.find_spec("llama_index.core")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(os.path.join(list(spec.submodule_search_locations)[0], "_static", "tiktoken_cache"))
    return [Path(d) for d in dirs if d]


def load_encoding(name: str = "cl100k_base") -> Any | None:
    """A tiktoken ``Encoding`` loaded from a local BPE file, or None when tiktoken or the file is missing."""
    with _lock:
        if name in _encodings:
            return _encodings[name]
        enc = None
        try:
            import tiktoken
            import tiktoken.load
            import tiktoken_ext.openai_public as public
        except ImportError:
            _encodings[name] = None
            return None
        if name in _BPE_URLS:
            key = hashlib.sha1(_BPE_URLS[name].encode()).hexdigest()
            local = next((d / key for d in _cache_dirs() if (d / key).is_file()), None)
            if local is not None:
                ctor = getattr(public, name)
                original = public.load_tiktoken_bpe
                # The constructor hard-codes the URL; hand it the local file instead (hash still checked).
                public.load_tiktoken_bpe = lambda _url, expected_hash=None: original(str(local), expected_hash)
                try:
                    enc = tiktoken.Encoding(**ctor())
                except (OSError, ValueError):
                    enc = None
                finally:
                    public.load_tiktoken_bpe = original
        _encodings[name] = enc
        return enc


class TokenCounter:
    """Counts tokens for one encoding; ``exact`` says whether a real BPE is behind :meth:`count`."""

    def __init__(self, encoding: str = "cl100k_base"):
        self.encoding_name = encoding
        self._enc = load_encoding(encoding)
        self.exact = self._enc is not None

    def estimate(self, text: str) -> int:
        return estimate_tokens(text)

    def count(self, text: str) -> int:
        if self._enc is not None:
            return len(self._enc.encode_ordinary(text))
        return (len(text.encode("utf-8", "surrogatepass")) + 2) // 3  # conservative without a BPE

    def pieces_if_over(self, text: str, max_tokens: int) -> list[str] | None:
        """None when ``text`` fits in ``max_tokens``; else its pieces (one BPE encode for both answers)."""
        if self._enc is None:
            return self.split(text, max_tokens) if self.count(text) > max_tokens else None
        ids = self._enc.encode_ordinary(text)
        if len(ids) <= max_tokens:
            return None
        pieces = [self._enc.decode(ids[i : i + max_tokens]) for i in range(0, len(ids), max_tokens)]
        return [p for p in pieces if p.strip()] or [text[:max_tokens]]

    def split(self, text: str, max_tokens: int) -> list[str]:
        """``text`` cut into consecutive pieces of at most ``max_tokens`` tokens (by BPE when available)."""
        if self._enc is not None:
            ids = self._enc.encode_ordinary(text)
            pieces = [self._enc.decode(ids[i : i + max_tokens]) for i in range(0, len(ids), max_tokens)]
        else:
            data = text.encode("utf-8", "surrogatepass")
            step = max(1, 3 * max_tokens)
            pieces = [data[i : i + step].decode("utf-8", "ignore") for i in range(0, len(data), step)]
        return [p for p in pieces if p.strip()] or [text[:max_tokens]]
