"""Embedder names to embedders (cached by the runtime's ``embedding_config`` cache)."""

from __future__ import annotations

from typing import Any

from letta_nb.errors import InvalidArgumentError

__all__ = ["resolve_embedder", "KNOWN_EMBEDDERS"]

KNOWN_EMBEDDERS = ("hash",)


def resolve_embedder(name: str) -> Any:
    spec = (name or "").strip().lower()
    if spec == "hash" or spec.startswith("hash?"):
        from letta_nb.embeddings.hash import HashEmbedder

        return HashEmbedder()
    raise InvalidArgumentError(
        f"embedding={name!r} is not available; known embedders: {', '.join(KNOWN_EMBEDDERS)} "
        "('hash' needs nothing but numpy)."
    )
