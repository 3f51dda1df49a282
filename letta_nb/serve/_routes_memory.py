"""Core memory (``/core-memory/blocks``) and archival memory (``/archival-memory``) of an agent.

Blocks are addressed by label, as in Letta; a block edit takes the agent's lease (between turns) through
``client.agents.blocks.aupdate``. Archival memory answers as Letta's SDK parses it: bare JSON arrays of
passages (a create returns the list it stored), search results as ``{passage, score}`` items.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from letta_nb.errors import InvalidArgumentError
from letta_nb.serve._request import body_of, client_of, endpoint, json_response, query_bool, query_int, query_list
from letta_nb.serve._wire import block_json, passage_json, search_json

__all__ = ["ROUTES"]


@endpoint
async def list_blocks(request: Request) -> Response:
    q, agent_id = request.query_params, request.path_params["agent_id"]
    found = await client_of(request).agents.blocks.alist(agent_id, before=q.get("before"), after=q.get("after"),
                                                         limit=query_int(request, "limit"), order=q.get("order"))
    return json_response([block_json(b, agent_id) for b in found])


@endpoint
async def retrieve_block(request: Request) -> Response:
    p = request.path_params
    block = await client_of(request).agents.blocks.aretrieve(p["block_label"], agent_id=p["agent_id"])
    return json_response(block_json(block, p["agent_id"]))


@endpoint
async def update_block(request: Request) -> Response:
    p, body = request.path_params, await body_of(request)
    block = await client_of(request).agents.blocks.aupdate(
        p["block_label"], agent_id=p["agent_id"], value=body.get("value"), limit=body.get("limit"),
        description=body.get("description"), read_only=body.get("read_only"))
    return json_response(block_json(block, p["agent_id"]))


@endpoint
async def create_passage(request: Request) -> Response:
    body = await body_of(request)
    if "text" not in body:
        raise InvalidArgumentError("the body needs 'text': the passage to store ({'text': ..., 'tags': [...]}).")
    made = await client_of(request).agents.passages.acreate(request.path_params["agent_id"], body["text"],
                                                            tags=body.get("tags"))
    return json_response([passage_json(p) for p in (made if isinstance(made, list) else [made])])


@endpoint
async def list_passages(request: Request) -> Response:
    q = request.query_params
    found = await client_of(request).agents.passages.alist(
        request.path_params["agent_id"], before=q.get("before"), after=q.get("after"),
        limit=query_int(request, "limit"), ascending=query_bool(request, "ascending", True))
    words = (q.get("search") or "").lower()
    return json_response([passage_json(p) for p in found if words in p.text.lower()])


@endpoint
async def search_passages(request: Request) -> Response:
    q = request.query_params
    found = await client_of(request).agents.passages.asearch(
        request.path_params["agent_id"], q.get("query") or "", top_k=query_int(request, "top_k") or 5,
        tags=query_list(request, "tags"), tag_match_mode=q.get("tag_match_mode") or "any",
        start_datetime=q.get("start_datetime"), end_datetime=q.get("end_datetime"))
    return json_response(search_json(found))


@endpoint
async def delete_passage(request: Request) -> Response:
    p = request.path_params
    await client_of(request).agents.passages.adelete(p["memory_id"], agent_id=p["agent_id"])
    return json_response({"message": f"Passage id={p['memory_id']} successfully deleted"})


_BLOCKS, _ARCHIVAL = "/v1/agents/{agent_id}/core-memory/blocks", "/v1/agents/{agent_id}/archival-memory"
ROUTES = [
    Route(_BLOCKS, list_blocks, methods=["GET"]),
    Route(_BLOCKS + "/{block_label}", retrieve_block, methods=["GET"]),
    Route(_BLOCKS + "/{block_label}", update_block, methods=["PATCH"]),
    Route(_ARCHIVAL, create_passage, methods=["POST"]),
    Route(_ARCHIVAL, list_passages, methods=["GET"]),
    Route(_ARCHIVAL + "/search", search_passages, methods=["GET"]),
    Route(_ARCHIVAL + "/{memory_id}", delete_passage, methods=["DELETE"]),
]
