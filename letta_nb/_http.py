"""HTTP to OpenAI-compatible endpoints: the runtime's one shared httpx client and the SDK client over it.

Models (letta_nb.llm) and embedders (letta_nb.embeddings) both call endpoints through these, so they
live below both layers. One ``httpx.AsyncClient`` per runtime means one connection pool, one set of
timeouts, and proxies / CA bundles taken from the environment in one place.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx
import orjson

__all__ = ["SdkClient", "WITHHELD_KEY", "error_message", "make_http_client"]

WITHHELD_KEY = "no-key (withheld)"
"""Sent instead of a key to an endpoint the user did not configure (see llm.registry.endpoint)."""


def make_http_client() -> httpx.AsyncClient:
    """The shared client: generous pool, finite timeouts, proxies and CA bundle from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=10.0),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        trust_env=True,
    )


def warm_sdk_import() -> None:
    """Start importing the ``openai`` SDK in a daemon thread, once per process. The import takes 0.5-1.2 s
    here (several seconds on a cold disk) and was paid, unexplained, by the first turn or archival insert of an
    agent with a remote model or embedder; started when such a client is built (agent created or loaded), it
    overlaps the user's next step. A call that needs the SDK before it is done waits on Python's import lock."""
    global _warming
    if _warming or "openai" in sys.modules:
        return
    _warming = True
    threading.Thread(target=functools.partial(__import__, "openai"), name="letta_nb-import-openai",
                     daemon=True).start()


_warming = False


class SdkClient:
    """The ``openai.AsyncOpenAI`` a model or embedder talks through, holding the key (never in a repr).

    It rides the runtime's shared httpx client (``http`` returns it; rebuilt if the runtime replaced it)
    or, used alone, one of its own that :meth:`aclose` closes.
    """

    def __init__(self, base_url: str, api_key: str, http: Callable[[], httpx.AsyncClient] | None, *,
                 max_retries: int, timeout: float):
        self.base_url, self.max_retries, self.timeout = base_url, max_retries, timeout
        self._api_key, self._http = api_key, http
        self._own_http: httpx.AsyncClient | None = None
        self._sdk: Any = None
        self._sdk_http: httpx.AsyncClient | None = None
        warm_sdk_import()

    def __repr__(self) -> str:
        return f"SdkClient(base_url={self.base_url!r})"

    def get(self) -> Any:
        import openai

        http = self._http() if self._http is not None else self._own_http
        if http is None:
            http = self._own_http = make_http_client()
        if self._sdk is None or self._sdk_http is not http:
            # openai 3.x annotates http_client as an httpx2 client but takes an httpx one too (openai/_httpx2.py)
            sdk_http: Any = http
            self._sdk = openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, http_client=sdk_http,
                                           max_retries=self.max_retries, timeout=self.timeout)
            self._sdk_http = http
        return self._sdk

    async def post_json(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POST ``payload`` through the SDK (its auth, URL, headers, error types), returning the raw
        response. The body is serialised by orjson: the SDK's ``json.dumps(ensure_ascii=False)`` took
        ~6 ms for a 900-input embeddings request, orjson ~0.1 ms. (SDKs older than the ``content``
        argument serialise it themselves.)"""
        response: httpx.Response
        if _post_takes_content():
            response = await self.get().post(path, content=orjson.dumps(payload), cast_to=httpx.Response)
        else:  # pragma: no cover - old SDKs
            response = await self.get().post(path, body=payload, cast_to=httpx.Response)
        return response

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None


@functools.lru_cache(maxsize=1)
def _post_takes_content() -> bool:
    import openai

    return "content" in inspect.signature(openai.AsyncOpenAI.post).parameters


def error_message(e: Any) -> str:
    """The endpoint's own words from an ``openai`` SDK error (``{"error": {"message": ...}}``), else str(e)."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(e, "message", e))

