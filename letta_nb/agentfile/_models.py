"""Letta's ``llm_config`` / ``embedding_config`` to letta_nb model and embedding specs, and back.

Letta names a model by a handle (``openai/gpt-4o-mini``) plus a config (endpoint type, endpoint URL,
context window); letta_nb by one spec string (:mod:`letta_nb.llm.registry`). Only what letta_nb can run
maps: OpenAI and OpenAI-compatible servers (``openai``, ``vllm`` with its URL), Ollama, and the offline
model. Anything else (Anthropic, Google, Z.ai, Letta's hosted ``letta-free``) maps to ``None``, and the
import asks for an override (``model=`` / ``embedding=``) rather than guessing.

Export goes the other way and writes configs Letta's pydantic models accept (``model``,
``model_endpoint_type``, ``context_window`` are required there; ``embedding_model``,
``embedding_endpoint_type``, ``embedding_dim`` likewise). A spec never holds a key (the registry refuses
one), so neither does an exported config.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from letta_nb.embeddings.openai import NATIVE_DIMS
from letta_nb.llm.registry import _CONTEXT, PROVIDERS, parse_remote_spec

__all__ = ["embedding_config", "embedding_spec", "llm_config", "model_spec"]

_OPENAI_COMPATIBLE = ("openai", "vllm")
_DEFAULT_OLLAMA = ("http://localhost:11434", "http://127.0.0.1:11434")


def _base(url: Any) -> str:
    return str(url or "").rstrip("/")


def _unless(value: Any, default: Any) -> Any:
    return None if value == default else value


def _opt(**options: Any) -> str:
    parts = [f"{k}={quote(str(v), safe=':/')}" for k, v in options.items() if v is not None]
    return "?" + "&".join(parts) if parts else ""


def model_spec(agent: dict[str, Any]) -> tuple[str | None, str]:
    """(the letta_nb spec for the agent's model or None, the model as the file names it)."""
    cfg = agent.get("llm_config") or {}
    handle = cfg.get("handle") or agent.get("model") or ""
    kind = str(cfg.get("model_endpoint_type") or handle.partition("/")[0]).lower()
    name = cfg.get("model") or handle.partition("/")[2]
    shown = handle or f"{kind}/{name}"
    if handle == "offline" or handle.startswith("offline?"):
        return handle, shown  # written by letta_nb's own export
    if not isinstance(name, str) or not name:
        return None, shown or "(no model)"
    window = cfg.get("context_window") if isinstance(cfg.get("context_window"), int) else None
    url = _base(cfg.get("model_endpoint"))
    if kind in _OPENAI_COMPATIBLE:
        if kind != "openai" and not url:
            return None, shown
        base = None if url in ("", _base(PROVIDERS["openai"][0])) else url
        return f"openai/{name}" + _opt(base_url=base, context_window=_unless(window, _CONTEXT["openai"])), shown
    if kind == "ollama":
        base = None if url in ("", *_DEFAULT_OLLAMA) else url + "/v1"
        return f"ollama/{name}" + _opt(base_url=base, context_window=_unless(window, _CONTEXT["ollama"])), shown
    return None, shown


def embedding_spec(agent: dict[str, Any]) -> tuple[str | None, str]:
    """(the letta_nb embedder spec for the agent's embedding config or None, the embedding as the file names it)."""
    cfg = agent.get("embedding_config") or {}
    handle = cfg.get("handle") or agent.get("embedding") or ""
    kind = str(cfg.get("embedding_endpoint_type") or handle.partition("/")[0]).lower()
    name = cfg.get("embedding_model") or handle.partition("/")[2]
    shown = handle or f"{kind}/{name}"
    if handle in ("hash", "local") or handle.startswith("hash?"):
        return handle, shown
    if not isinstance(name, str) or not name:
        return None, shown or "(no embedding)"
    dim = cfg.get("embedding_dim") if isinstance(cfg.get("embedding_dim"), int) else None
    # Letta records a padded size for some models (2000 for a 1536-wide one): ask for a size only below native.
    dims = dim if dim and name in NATIVE_DIMS and dim < NATIVE_DIMS[name] else None
    url = _base(cfg.get("embedding_endpoint"))
    if kind == "openai":
        base = None if url in ("", _base(PROVIDERS["openai"][0])) else url
        return f"openai/{name}" + _opt(base_url=base, dimensions=dims), shown
    if kind == "ollama":
        base = None if url in ("", *_DEFAULT_OLLAMA) else url + "/v1"
        return f"ollama/{name}" + _opt(base_url=base), shown
    return None, shown


def llm_config(spec: str) -> dict[str, Any]:
    """Letta's ``llm_config`` for a letta_nb model spec."""
    head = spec.partition("?")[0]
    if head.strip().lower() == "offline":
        from letta_nb.llm.offline import OfflineModel

        window = OfflineModel.from_spec(spec).context_window
        return {"model": "offline", "model_endpoint_type": "openai", "model_endpoint": None,
                "provider_name": "letta_nb", "context_window": window, "handle": spec, "temperature": 0.7}
    provider, name, options = parse_remote_spec(spec)
    default_url = PROVIDERS[provider][0]
    url = options.get("base_url") or default_url
    if provider == "ollama" and url.rstrip("/").endswith("/v1"):
        url = url.rstrip("/")[:-3]  # Letta's ollama endpoint is the server, not its OpenAI path
    config: dict[str, Any] = {
        "model": name, "model_endpoint_type": provider, "model_endpoint": url, "provider_name": provider,
        "context_window": options.get("context_window", _CONTEXT[provider]), "handle": f"{provider}/{name}",
        "temperature": options.get("temperature", 0.7),
    }
    return config


def embedding_config(spec: str) -> dict[str, Any]:
    """Letta's ``embedding_config`` for a letta_nb embedder spec."""
    from letta_nb.embeddings.registry import _HASH_OPTIONS, _REMOTE_OPTIONS, _options

    head, _, query = spec.strip().partition("?")
    kind, _, name = head.partition("/")
    kind = kind.lower()
    if kind in ("hash", "local") and not name:
        dim = _options(spec, query, _HASH_OPTIONS).get("dim", 384) if kind == "hash" else 384
        return {"embedding_endpoint_type": "hugging-face", "embedding_endpoint": None, "embedding_model": kind,
                "embedding_dim": dim, "embedding_chunk_size": 300, "handle": spec, "batch_size": 32}
    options = _options(spec, query, _REMOTE_OPTIONS)
    url = options.get("base_url") or PROVIDERS[kind][0]
    dim = options.get("dimensions") or NATIVE_DIMS.get(name, 1536)
    return {"embedding_endpoint_type": kind, "embedding_endpoint": url, "embedding_model": name,
            "embedding_dim": dim, "embedding_chunk_size": 300, "handle": f"{kind}/{name}", "batch_size": 32}
