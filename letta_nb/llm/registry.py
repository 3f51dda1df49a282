"""Model names to model clients.

A model is named ``provider[/model][?options]``:

- ``offline`` or ``offline?latency_ms=50&tps=200``: the built-in offline model;
- ``openai/gpt-4o-mini``: OpenAI, or any OpenAI-compatible endpoint via ``OPENAI_BASE_URL`` or
  ``?base_url=http://127.0.0.1:PORT/v1`` (the loopback server); key from ``OPENAI_API_KEY``;
- ``ollama/llama3.2``: Ollama's OpenAI-compatible API at ``http://127.0.0.1:11434/v1`` unless
  ``OLLAMA_BASE_URL`` or ``?base_url=`` says otherwise; no key needed.

Options for remote models: ``base_url``, ``context_window``, ``temperature``, ``max_retries``, ``timeout``.
The spec is what an agent stores, so it must never carry a key: ``api_key`` in a spec is refused; keys
come from the environment or the ``api_keys`` mapping the runtime holds in memory. The runtime caches
the resolved client per name (the ``model_config`` cache), so resolving is off the hot path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from letta_nb.errors import InvalidArgumentError, ModelNotFoundError
from letta_nb.llm.base import LLMClient

__all__ = ["resolve_model", "KNOWN_PROVIDERS", "PROVIDERS"]

KNOWN_PROVIDERS = ("offline", "openai", "ollama")


# provider -> (default base URL, base-URL env var, key env var, key required without a custom base_url)
PROVIDERS: dict[str, tuple[str, str, str, bool]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY", True),
    "ollama": ("http://127.0.0.1:11434/v1", "OLLAMA_BASE_URL", "OLLAMA_API_KEY", False),
}
_OPTIONS = {"base_url": str, "context_window": int, "temperature": float, "max_retries": int, "timeout": float}
_CONTEXT = {"openai": 128_000, "ollama": 8_192}


def parse_remote_spec(spec: str, kind: str = "model") -> tuple[str, str, dict[str, Any]]:
    """``provider/name?k=v`` -> (provider, name, options) with options typed and checked."""
    head, _, query = spec.strip().partition("?")
    provider, _, name = head.partition("/")
    provider = provider.lower()
    if not name:
        raise InvalidArgumentError(
            f"{kind} {spec!r} names no model; expected '{provider}/<model>', e.g. "
            f"{'openai/gpt-4o-mini' if kind == 'model' else 'openai/text-embedding-3-small'}.")
    options: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in ("api_key", "key"):
            raise InvalidArgumentError(
                f"do not put an API key in the {kind} name (it is stored with the agent); set "
                f"{PROVIDERS.get(provider, PROVIDERS['openai'])[2]} in the environment instead.")
        if key not in _OPTIONS:
            raise InvalidArgumentError(f"unknown {kind} option {key!r} in {spec!r}; valid options: {', '.join(_OPTIONS)}.")
        try:
            options[key] = _OPTIONS[key](raw)
        except ValueError:
            raise InvalidArgumentError(f"{kind} option {key}={raw!r} in {spec!r} is not a valid "
                                       f"{_OPTIONS[key].__name__}.") from None
    return provider, name, options


def endpoint(provider: str, options: dict[str, Any], api_keys: Mapping[str, str] | None, spec: str) -> tuple[str, str]:
    """(base_url, api_key) for a provider: explicit option, then environment, then the provider default."""
    default_url, url_env, key_env, needs_key = PROVIDERS[provider]
    base_url = options.get("base_url") or os.environ.get(url_env) or default_url
    key = (api_keys or {}).get(provider) or os.environ.get(key_env)
    if not key:
        if needs_key and base_url == default_url:
            raise InvalidArgumentError(
                f"no API key for {spec!r}: set {key_env} (or pass base_url=... for a local OpenAI-compatible "
                f"server). Keys are read from the environment and never stored with the agent.")
        key = "no-key"  # local servers ignore it, the SDK insists on one
    return base_url, key


def resolve_model(spec: str, http: Callable[[], Any] | None = None,
                  api_keys: Mapping[str, str] | None = None) -> LLMClient:
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(repr(spec), KNOWN_PROVIDERS)
    provider = spec.split("?", 1)[0].split("/", 1)[0].strip().lower()
    if provider == "offline":
        from letta_nb.llm.offline import OfflineModel

        return OfflineModel.from_spec(spec)
    if provider in PROVIDERS:
        from letta_nb.llm.openai_compat import OpenAICompatModel

        provider, name, options = parse_remote_spec(spec)
        base_url, key = endpoint(provider, options, api_keys, spec)
        return OpenAICompatModel(
            provider=provider, model=name, base_url=base_url, api_key=key, spec=spec.strip(), http=http,
            context_window=options.get("context_window", _CONTEXT[provider]),
            max_retries=options.get("max_retries", 3), timeout=options.get("timeout", 120.0),
            temperature=options.get("temperature"))
    raise ModelNotFoundError(
        spec, KNOWN_PROVIDERS,
        hint="Use model='offline' (built in, no API key), 'openai/gpt-4o-mini' or 'ollama/llama3.2'.",
    )
