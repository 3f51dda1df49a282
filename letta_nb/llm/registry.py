"""Model names to model clients.

A model is named ``provider[/model][?options]``:

- ``offline`` or ``offline?latency_ms=50&tps=200``: the built-in offline model;
- ``openai/gpt-4o-mini``: OpenAI, or any OpenAI-compatible endpoint via ``OPENAI_BASE_URL`` or
  ``?base_url=http://127.0.0.1:PORT/v1`` (the loopback server); key from ``OPENAI_API_KEY``;
- ``ollama/llama3.2``: Ollama's OpenAI-compatible API at ``http://127.0.0.1:11434/v1`` unless
  ``OLLAMA_BASE_URL`` or ``?base_url=`` says otherwise; no key needed.

Options for remote models: ``base_url``, ``context_window``, ``temperature``, ``max_retries``, ``timeout``.
The spec is what an agent stores, so it must never carry a key: ``api_key`` in a spec is refused; keys
come from the environment or the ``api_keys`` mapping the runtime holds in memory. This module also holds
the spec grammar's option parsing for every kind of spec (models, the offline model, embedders):
options are typed and bounded, given once, and errors about a spec show it through
:func:`redact_spec` -- option names only, never values -- because a misspelled ``?apikey=sk-...`` is
exactly the spec that carries a secret. The runtime caches
the resolved client per name (the ``model_config`` cache), so resolving is off the hot path.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from letta_nb._http import WITHHELD_KEY
from letta_nb._text import clean_text, has_surrogates
from letta_nb.errors import InvalidArgumentError, ModelNotFoundError
from letta_nb.llm.base import LLMClient

__all__ = ["KNOWN_PROVIDERS", "PROVIDERS", "resolve_model"]

KNOWN_PROVIDERS = ("offline", "openai", "ollama")


# provider -> (default base URL, base-URL env var, key env var, key required without a custom base_url)
PROVIDERS: dict[str, tuple[str, str, str, bool]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY", True),
    "ollama": ("http://127.0.0.1:11434/v1", "OLLAMA_BASE_URL", "OLLAMA_API_KEY", False),
}
_CONTEXT = {"openai": 128_000, "ollama": 8_192}

# Spec options: a parser per option that raises ValueError saying what is expected, never echoing the
# value. Bounds stop a typo from failing much later: a zero context window, a NaN temperature, an
# embedding dimension that allocates gigabytes on first use.
OptionParser = Callable[[str], Any]


def integer(lo: int, hi: int) -> OptionParser:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"not a valid int: expected an integer from {lo:,} to {hi:,}") from None
        if not lo <= value <= hi:
            raise ValueError(f"out of range: expected an integer from {lo:,} to {hi:,}")
        return value
    return parse


def number(lo: float, hi: float, *, above_lo: bool = False) -> OptionParser:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"not a valid float: expected a number {'>' if above_lo else '>='} {lo:,.10g} and "
                             f"<= {hi:,.10g}") from None
        if not math.isfinite(value) or value < lo or value > hi or (above_lo and value == lo):
            raise ValueError(f"out of range: expected a finite number {'>' if above_lo else '>='} {lo:,.10g} "
                             f"and <= {hi:,.10g}")
        return value
    return parse


def choice(*values: str) -> OptionParser:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError("not valid: expected one of " + ", ".join(repr(v) for v in values))
        return raw
    return parse


def url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or len(raw) > 2048 or any(c.isspace() for c in raw):
        raise ValueError("not valid: expected an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
    return raw


def boolean(raw: str) -> bool:
    if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("not valid: expected true or false (also 1/0, yes/no, on/off)")
    return raw.lower() in ("1", "true", "yes", "on")


MAX_RETRIES = integer(0, 20)
TIMEOUT_S = number(0, 86_400, above_lo=True)
_OPTIONS: dict[str, OptionParser] = {
    "base_url": url, "context_window": integer(1, 10_000_000), "temperature": number(0, 2),
    "max_retries": MAX_RETRIES, "timeout": TIMEOUT_S,
}
_NAMEABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,39}")
_SECRET_WORDS = ("key", "token", "secret", "pass", "auth", "bearer", "cred")


def _option_name(key: str, index: int) -> str:
    """An option name as an error may show it: a short identifier, else only its position (it may be a key)."""
    if _NAMEABLE.fullmatch(key) and not key.lower().startswith("sk-"):
        return key
    return f"<option {index + 1}>"


def redact_spec(spec: Any) -> str:
    """A model or embedding spec as errors show it: the name and the option names, never option values.

    ``openai/gpt-4o?apikey=sk-...`` becomes ``openai/gpt-4o?apikey=...``; a name that carries ``&`` or
    ``=`` (a mistyped ``?``) is cut there."""
    if spec is None or isinstance(spec, int | float):
        return repr(spec)
    if not isinstance(spec, str):
        return f"<{type(spec).__name__}>"
    head, sep, query = clean_text(spec.strip()).partition("?")
    cut = min((i for i in (head.find("&"), head.find("=")) if i >= 0), default=-1)
    shown = head[:cut] + "..." if cut >= 0 else head
    shown = shown if len(shown) <= 120 else shown[:120] + "..."
    if not sep:
        return shown
    names = [_option_name(k, i) for i, (k, _) in enumerate(parse_qsl(query, keep_blank_values=True))]
    return shown + "?" + "&".join(f"{n}=..." for n in names)


def parse_options(spec: str, query: str, allowed: Mapping[str, OptionParser], kind: str,
                  key_env: str = "OPENAI_API_KEY") -> dict[str, Any]:
    """The ``?k=v&...`` options of a spec, each parsed and bounded; errors name options, never values."""
    shown = redact_spec(spec)
    valid = ", ".join(allowed) or "none"
    out: dict[str, Any] = {}
    for i, (key, raw) in enumerate(parse_qsl(query, keep_blank_values=True)):
        name = _option_name(key, i)
        lowered = key.lower()
        if key not in allowed and any(word in lowered for word in _SECRET_WORDS):
            raise InvalidArgumentError(
                f"{kind} option {name!r} in {shown!r} looks like a credential: do not put an API key in the {kind} "
                "name (it is stored with the agent); "
                + (f"set {key_env} in the environment or pass connect(api_keys={{...}}) instead." if key_env
                   else "this one needs no key."))
        if key not in allowed:
            raise InvalidArgumentError(f"unknown {kind} option {name!r} in {shown!r}; valid options: {valid}.")
        if key in out:
            raise InvalidArgumentError(f"{kind} option {key!r} is given twice in {shown!r}; give it once.")
        try:
            out[key] = allowed[key](raw)
        except ValueError as e:
            raise InvalidArgumentError(f"{kind} option {key!r} in {shown!r} is {e}.") from None
    return out


def parse_remote_spec(spec: str, kind: str = "model") -> tuple[str, str, dict[str, Any]]:
    """``provider/name?k=v`` -> (provider, name, options) with options typed and checked."""
    head, _, query = spec.strip().partition("?")
    provider, _, name = head.partition("/")
    provider = provider.lower()
    example = "openai/gpt-4o-mini" if kind == "model" else "openai/text-embedding-3-small"
    if not name:
        raise InvalidArgumentError(
            f"{kind} {redact_spec(spec)!r} names no model; expected '{provider}/<model>', e.g. {example}.")
    if any(c in name for c in "&=") or any(not c.isprintable() or c.isspace() for c in name) or has_surrogates(name):
        raise InvalidArgumentError(
            f"{kind} {redact_spec(spec)!r}: the model name must be printable text without spaces, '&' or '='; "
            f"options go after a '?', e.g. {example}?timeout=30.")
    key_env = PROVIDERS.get(provider, PROVIDERS["openai"])[2]
    return provider, name, parse_options(spec, query, _OPTIONS, kind, key_env)


def endpoint(provider: str, options: dict[str, Any], api_keys: Mapping[str, str] | None, spec: str,
             *, trusted: bool = True) -> tuple[str, str]:
    """(base_url, api_key) for a provider: explicit option, then environment, then the provider default.

    A key goes only to an endpoint the user configured: the provider's default, the environment's
    ``*_BASE_URL``, or a spec's own ``?base_url=`` when the user wrote that spec (``trusted``; see
    runtime/trust.py). A spec from someone else's store naming another endpoint gets no key
    (``_http.WITHHELD_KEY``), so a shared store cannot collect the user's key with a ``base_url`` of its own."""
    default_url, url_env, key_env, needs_key = PROVIDERS[provider]
    configured = os.environ.get(url_env) or default_url
    base_url = options.get("base_url") or configured
    if not trusted and base_url.rstrip("/") != configured.rstrip("/"):
        return base_url, WITHHELD_KEY
    key = (api_keys or {}).get(provider) or os.environ.get(key_env)
    if not key:
        if needs_key and base_url == default_url:
            raise InvalidArgumentError(
                f"no API key for {spec!r}: set {key_env} (or pass base_url=... for a local OpenAI-compatible "
                f"server). Keys are read from the environment and never stored with the agent.")
        key = "no-key"  # local servers ignore it, the SDK insists on one
    return base_url, key


def resolve_model(spec: str, http: Callable[[], Any] | None = None,
                  api_keys: Mapping[str, str] | None = None, *, trusted: bool = True) -> LLMClient:
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(redact_spec(spec), KNOWN_PROVIDERS,
                                 hint="model must be a string such as 'offline' or 'openai/gpt-4o-mini'.")
    provider = spec.split("?", 1)[0].split("/", 1)[0].strip().lower()
    if provider == "offline":
        from letta_nb.llm.offline import OfflineModel

        return OfflineModel.from_spec(spec)
    if provider in PROVIDERS:
        from letta_nb.llm.openai_compat import OpenAICompatModel

        provider, name, options = parse_remote_spec(spec)
        base_url, key = endpoint(provider, options, api_keys, redact_spec(spec), trusted=trusted)
        return OpenAICompatModel(
            provider=provider, model=name, base_url=base_url, api_key=key, spec=spec.strip(), http=http,
            context_window=options.get("context_window", _CONTEXT[provider]),
            max_retries=options.get("max_retries", 3), timeout=options.get("timeout", 120.0),
            temperature=options.get("temperature"))
    raise ModelNotFoundError(
        redact_spec(spec), KNOWN_PROVIDERS,
        hint="Use model='offline' (built in, no API key), 'openai/gpt-4o-mini' or 'ollama/llama3.2'.",
    )
