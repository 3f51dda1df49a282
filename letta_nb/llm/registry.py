"""Model names to model clients.

A model is named ``provider[/model][?options]``: ``offline`` or ``offline?latency_ms=50&tps=200`` for
the built-in offline model. The runtime caches the resolved client per name (the ``model_config``
cache), so resolving is off the hot path.
"""

from __future__ import annotations

from letta_nb.errors import ModelNotFoundError
from letta_nb.llm.base import LLMClient

__all__ = ["resolve_model", "KNOWN_PROVIDERS"]

KNOWN_PROVIDERS = ("offline",)


def resolve_model(spec: str) -> LLMClient:
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(repr(spec), KNOWN_PROVIDERS)
    provider = spec.split("?", 1)[0].split("/", 1)[0].strip().lower()
    if provider == "offline":
        from letta_nb.llm.offline import OfflineModel

        return OfflineModel.from_spec(spec)
    raise ModelNotFoundError(
        spec, KNOWN_PROVIDERS, hint="Use model='offline' (built in, no API key)."
    )
