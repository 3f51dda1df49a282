"""The Starlette app: Letta's v1 routes letta_nb supports, a 501 for the rest, behind the bearer gate.

Paths are matched with and without a trailing slash (letta_client writes ``/v1/agents/`` for collections and
``/messages`` without one; other clients differ), so no request depends on a redirect. Anything else under any
method answers 501 with the route in the body, so a script written for Letta learns at once which call
letta_nb does not serve, rather than meeting a 404 it could mistake for a missing agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from letta_nb.serve import _routes_agents, _routes_memory, _routes_messages, _routes_tools
from letta_nb.serve._auth import BearerGate, HttpRecord, Scope
from letta_nb.serve._request import json_response

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["build_app"]

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def not_implemented(request: Request) -> Response:
    route = f"{request.method} {request.url.path}"
    return json_response({"detail": f"{route} is a Letta route letta_nb does not serve. Served: agents, "
                                    "messages (JSON and stream), core-memory blocks, archival memory, tools, "
                                    "agent export/import (README: 'Serve Letta's REST API')."}, 501)


def _both_slashes(routes: list[Route]) -> list[Route]:
    out = []
    for r in routes:
        other = r.path[:-1] if r.path.endswith("/") else r.path + "/"
        out += [r, Route(other, r.endpoint, methods=sorted(r.methods or ()), name=r.path)]
    return out


def build_app(client: Client, token: str, on_request: Callable[[HttpRecord], None]) -> Any:
    routes = _both_slashes([*_routes_agents.ROUTES, *_routes_messages.ROUTES, *_routes_memory.ROUTES,
                            *_routes_tools.ROUTES])
    served = [*routes, Route("/{path:path}", not_implemented, methods=_METHODS)]
    app = Starlette(routes=served)
    app.router.redirect_slashes = False
    app.state.client = client

    def route_of(scope: Scope) -> str:
        """The template a request matched (``/v1/agents/{agent_id}``): the probe's ``route``, never ids."""
        for r in routes:
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return r.name if r.name.startswith("/") else r.path
        return "(not served)"

    return BearerGate(app, token, route_of, on_request)
