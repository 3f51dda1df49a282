"""``/v1/tools``: list, retrieve, create, upsert, delete.

A tool is Python source, registered as ``client.tools.create(source_code=...)`` registers it: the source
runs in the kernel, like a function defined in a cell, which is why the server needs the token and listens on
loopback only. Letta answers 409 when ``create`` names a tool that exists (``upsert`` replaces it); letta_nb
does the same. Base tools have no stored id: their name is their id, and every route takes either.
"""

from __future__ import annotations

import ast
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from letta_nb.api._base import _page
from letta_nb.errors import AlreadyExistsError, InvalidArgumentError
from letta_nb.runtime.runtime import Runtime
from letta_nb.serve._request import body_of, client_of, endpoint, json_response, query_int
from letta_nb.serve._wire import tool_json

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["ROUTES"]


async def _describe(rt: Runtime, names: list[str]) -> list[dict[str, Any]]:
    ids = {row.name: row.id for row in await rt.store.tool_rows()}
    return [tool_json(await rt.tool_spec(name), ids.get(name)) for name in names]


async def _tools_json(client: Client, names: list[str]) -> list[dict[str, Any]]:
    return await client._thread.run_async(_describe(client.runtime, names))


@endpoint
async def list_tools(request: Request) -> Response:
    client, q = client_of(request), request.query_params
    found = await _tools_json(client, await client.tools.alist(name=q.get("name")))
    rows = [SimpleNamespace(id=t["id"], body=t) for t in found]
    page = _page(rows, before=q.get("before"), after=q.get("after"), limit=query_int(request, "limit"),
                 order="asc", what="tool")
    return json_response([r.body for r in page])


@endpoint
async def retrieve(request: Request) -> Response:
    client = client_of(request)
    spec = await client.tools.aretrieve(request.path_params["tool_id"])
    return json_response((await _tools_json(client, [spec.name]))[0])


def _defined_name(source: Any) -> str | None:
    """The name of the last function ``source`` defines (the one that becomes the tool), if it parses."""
    try:
        tree = ast.parse(source) if isinstance(source, str) else None
    except SyntaxError:
        return None  # registering it reports the error
    defs = [n.name for n in (tree.body if tree else []) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return defs[-1] if defs else None


async def _register(request: Request, *, replace: bool) -> Response:
    client, body = client_of(request), await body_of(request)
    if "source_code" not in body:
        raise InvalidArgumentError("the body needs 'source_code': Python source that defines the tool's function.")
    name = _defined_name(body["source_code"])
    if not replace and name is not None and name in await client.tools.alist():
        raise AlreadyExistsError(f"a tool named {name!r} exists; PUT /v1/tools/ (client.tools.upsert) replaces it.")
    spec = await client.tools.acreate(
        source_code=body["source_code"], enable_parallel_execution=body.get("enable_parallel_execution"),
        default_requires_approval=body.get("default_requires_approval"))
    return json_response((await _tools_json(client, [spec.name]))[0])


@endpoint
async def create(request: Request) -> Response:
    return await _register(request, replace=False)


@endpoint
async def upsert(request: Request) -> Response:
    return await _register(request, replace=True)


@endpoint
async def delete(request: Request) -> Response:
    tool_id = request.path_params["tool_id"]
    await client_of(request).tools.adelete(tool_id)
    return json_response({"message": f"Tool id={tool_id} successfully deleted"})


ROUTES = [
    Route("/v1/tools/", list_tools, methods=["GET"]),
    Route("/v1/tools/", create, methods=["POST"]),
    Route("/v1/tools/", upsert, methods=["PUT"]),
    Route("/v1/tools/{tool_id}", retrieve, methods=["GET"]),
    Route("/v1/tools/{tool_id}", delete, methods=["DELETE"]),
]
