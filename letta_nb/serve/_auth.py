"""The gate every request passes: the bearer token, then a timing record for ``probes.http()``.

A plain ASGI middleware around the whole app, so no route can forget the check: a request without
``Authorization: Bearer <token>`` (letta_client sends its ``api_key`` so) gets 401 before routing. The token is
compared in constant time and never written anywhere: not in the 401 body, not in a log line (uvicorn's
access log is off), not in the probe record, which keeps method, route template, status and latency only.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BearerGate", "HttpRecord"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = (b'{"detail":"Missing or wrong bearer token. Pass the token %letta serve printed: '
                 b'Letta(base_url=..., api_key=TOKEN)."}')


@dataclass(frozen=True)
class HttpRecord:
    """One HTTP request the server answered."""

    started_at: float
    method: str
    route: str
    status: int
    duration_ms: float


class BearerGate:
    """Refuse requests without the token (401); time every request and hand its record to ``on_request``."""

    def __init__(self, app: ASGIApp, token: str, route_of: Callable[[Scope], str],
                 on_request: Callable[[HttpRecord], None]):
        self._app, self._expected = app, f"Bearer {token}".encode()
        self._route_of, self._on_request = route_of, on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started, t0, status = time.time(), time.perf_counter(), 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if self._authorized(scope):
                await self._app(scope, receive, send_status)
            else:
                await send_status({"type": "http.response.start", "status": 401,
                                   "headers": [(b"content-type", b"application/json"),
                                               (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": _UNAUTHORIZED})
        finally:
            route = self._route_of(scope)
            self._on_request(HttpRecord(started, scope["method"], route, status,
                                        (time.perf_counter() - t0) * 1000))

    def _authorized(self, scope: Scope) -> bool:
        got = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                got = value
                break
        return hmac.compare_digest(got, self._expected)
