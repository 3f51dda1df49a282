"""Is a model provider ready to use here? A short, bounded request to its endpoint, cached briefly.

``%letta models`` used to call Ollama ready whenever no key was needed, with no server running. A
provider is ready only when its endpoint answered: ``GET {base_url}/models`` (OpenAI's and Ollama's
OpenAI-compatible API both serve it) with the key ``registry.endpoint`` would send, within
``TIMEOUT_S``. Each answer says what was checked (the URL without credentials, the status or why it
failed), and is kept for ``TTL_S`` so listing the providers twice does not probe twice. A missing
required key is reported without any request. The key is never shown; it only goes where the model
calls would send it (``registry.endpoint`` decides, one place).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import httpx

from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.registry import PROVIDERS, endpoint

__all__ = ["Readiness", "provider_readiness", "TIMEOUT_S", "TTL_S"]

TIMEOUT_S = 1.5  # a local server answers in milliseconds; a remote one well within this
TTL_S = 10.0
_cache: dict[tuple[str, str, str], tuple[float, Readiness]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Readiness:
    """``ready``: the endpoint answered 200 (or the provider is built in). ``checked``: what that means here."""

    ready: bool
    checked: str


def _shown(url: str) -> str:
    """The URL as displayed: no user name, password or query (where a credential could hide)."""
    try:
        u = httpx.URL(url)
        return str(u.copy_with(username=None, password=None, query=None, fragment=None)).rstrip("/")
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(an invalid URL)"


def _probe(base_url: str, key: str) -> Readiness:
    target = f"{_shown(base_url)}/models"
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=httpx.Timeout(TIMEOUT_S), trust_env=True) as http:
            response = http.get(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {key}"})
    except httpx.ConnectError:
        return Readiness(False, f"GET {target}: no server answered (connection refused or host unknown)")
    except httpx.TimeoutException:
        return Readiness(False, f"GET {target}: no answer within {TIMEOUT_S:g} s")
    except httpx.HTTPError as e:
        return Readiness(False, f"GET {target}: {type(e).__name__}")
    ms = (time.perf_counter() - started) * 1000
    if response.status_code == 200:
        return Readiness(True, f"GET {target}: HTTP 200 in {ms:.0f} ms")
    why = " (the key was refused)" if response.status_code in (401, 403) else ""
    return Readiness(False, f"GET {target}: HTTP {response.status_code}{why}")


def provider_readiness(provider: str) -> Readiness:
    """Whether ``provider`` answers at the endpoint its models would use (cached for ``TTL_S`` seconds)."""
    if provider == "offline":
        return Readiness(True, "built in (no endpoint)")
    if provider not in PROVIDERS:
        return Readiness(False, "not checked (no endpoint known for this provider)")
    key_env = PROVIDERS[provider][2]
    try:
        base_url, key = endpoint(provider, {}, None, provider)
    except InvalidArgumentError:
        return Readiness(False, f"{key_env} is not set (no request sent)")
    cache_key = (provider, base_url, hashlib.sha256(key.encode()).hexdigest())
    now = time.monotonic()
    with _lock:
        hit = _cache.get(cache_key)
        if hit is not None and now - hit[0] < TTL_S:
            return hit[1]
    status = _probe(base_url, key)
    with _lock:
        _cache[cache_key] = (time.monotonic(), status)
    return status
