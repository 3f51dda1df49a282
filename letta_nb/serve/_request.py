"""What every route shares: the client behind the app, the request's JSON and query, errors as Letta's bodies.

Letta answers errors as ``{"detail": "..."}`` with 404 for an unknown agent, block, tool or passage, 422 for
input it cannot use, 409 for a name already taken or an agent that is busy (its archived server's
``UniqueConstraintViolationError`` and ``PendingApprovalError``). Each route is wrapped by :func:`endpoint`,
which turns a :class:`~letta_nb.errors.LettaNBError` into that body (its message already names the argument,
what was expected and the fix) and anything else into a 500 that says where to look without echoing data.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from letta_nb.errors import (
    AgentBusyError,
    AlreadyExistsError,
    InvalidArgumentError,
    LettaNBError,
    NotFoundError,
    PendingApprovalError,
    ProviderError,
    ReentrantTurnError,
    RuntimeClosedError,
)
from letta_nb.serve._wire import dumps

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["body_of", "client_of", "endpoint", "json_response", "query_bool", "query_int", "query_list"]

_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (NotFoundError, 404), (AlreadyExistsError, 409), (AgentBusyError, 409), (PendingApprovalError, 409),
    (ReentrantTurnError, 409), (ProviderError, 502), (RuntimeClosedError, 503), (ValueError, 422),
    (TypeError, 422),
)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def status_of(exc: LettaNBError) -> int:
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)


def error_response(exc: BaseException) -> Response:
    if isinstance(exc, LettaNBError):
        return json_response({"detail": str(exc)}, status_of(exc))
    return json_response({"detail": f"Internal error ({type(exc).__name__}) in letta_nb's server; the kernel "
                                    "that runs %letta serve has the details (client.agents.* shows the same "
                                    "call's error in Python)."}, 500)


Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Endpoint) -> Endpoint:
    """A route whose errors become Letta's error bodies."""

    @functools.wraps(fn)
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as e:  # every failure is an answer, never a dropped connection
            return error_response(e)

    return wrapped


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


async def body_of(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise InvalidArgumentError("the request body must be JSON (an object of the route's fields); "
                                   "it did not parse.") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError(f"the request body must be a JSON object, got a JSON {type(body).__name__}.")
    return body


def query_int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidArgumentError(f"query parameter {name} must be an integer, got {value[:40]!r}.") from None


def query_bool(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgumentError(f"query parameter {name} must be true or false, got {value[:40]!r}.")


def query_list(request: Request, name: str) -> list[str] | None:
    values = request.query_params.getlist(name)
    return values or None
