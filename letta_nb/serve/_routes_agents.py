"""``/v1/agents``: create, list, retrieve, update, delete; ``/export`` and ``/import`` (Letta Agent Files).

Each route is one call of the client's async API (``client.agents.acreate`` ...), so the rules a notebook
obeys hold over HTTP too: argument checks, the agent's lease for every change, one error family. Letta's
request bodies carry many fields letta_nb has no use for (templates, projects, identities); those are
ignored, as a Letta server ignores fields of other deployments, while a field letta_nb does use is checked.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.runtime import Runtime
from letta_nb.schemas import AgentState
from letta_nb.serve._request import body_of, client_of, endpoint, json_response, query_bool, query_int, query_list
from letta_nb.serve._wire import agent_json, tool_json

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["ROUTES", "agents_json"]

_BLOCK_KEYS = ("label", "value", "limit", "description", "read_only")
_CREATE_KEYS = ("name", "model", "embedding", "system", "agent_type", "tags", "include_base_tools", "tool_rules",
                "metadata", "block_ids")
_UPDATE_KEYS = ("name", "model", "embedding", "system", "agent_type", "tags", "tool_rules", "metadata")


async def _describe(rt: Runtime, agents: list[AgentState]) -> list[dict[str, Any]]:
    """Runs on the runtime loop: tools as objects, the model's window, the embedder's dimension."""
    ids = {row.name: row.id for row in await rt.store.tool_rows()}
    out = []
    for agent in agents:
        tools = [tool_json(await rt.tool_spec(name), ids.get(name)) for name in agent.tools]
        try:
            window = int(rt.llm(agent.model).context_window)
        except Exception:  # a model this process cannot run (an imported file's): the agent is still shown
            window = 0
        try:
            dim = int(rt.embedder(agent.embedding).dim)
        except Exception:
            dim = 0
        out.append(agent_json(agent, tools, window, dim))
    return out


async def agents_json(client: Client, agents: list[AgentState]) -> list[dict[str, Any]]:
    return await client._thread.run_async(_describe(client.runtime, agents))


async def _tool_names(client: Client, body: dict[str, Any]) -> list[str]:
    names = list(body.get("tools") or [])
    for tool_id in body.get("tool_ids") or []:
        names.append((await client.tools.aretrieve(tool_id)).name)
    return names


@endpoint
async def create(request: Request) -> Response:
    client, body = client_of(request), await body_of(request)
    blocks = body.get("memory_blocks")
    if blocks is not None and not (isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)):
        raise InvalidArgumentError("memory_blocks must be a list of {'label': ..., 'value': ...} objects.")
    fields = {k: body[k] for k in _CREATE_KEYS if body.get(k) is not None}
    agent = await client.agents.acreate(
        memory_blocks=None if blocks is None else [{k: b[k] for k in _BLOCK_KEYS if k in b} for b in blocks],
        tools=await _tool_names(client, body), **fields)
    return json_response((await agents_json(client, [agent]))[0])


@endpoint
async def list_agents(request: Request) -> Response:
    client, q = client_of(request), request.query_params
    found = await client.agents.alist(name=q.get("name"), tags=query_list(request, "tags"),
                                      match_all_tags=query_bool(request, "match_all_tags", False),
                                      before=q.get("before"), after=q.get("after"), limit=query_int(request, "limit"),
                                      order=q.get("order") or "desc")
    return json_response(await agents_json(client, found))


@endpoint
async def retrieve(request: Request) -> Response:
    client = client_of(request)
    agent = await client.agents.aretrieve(request.path_params["agent_id"])
    return json_response((await agents_json(client, [agent]))[0])


@endpoint
async def update(request: Request) -> Response:
    client, body = client_of(request), await body_of(request)
    fields = {k: body[k] for k in _UPDATE_KEYS if body.get(k) is not None}
    agent = await client.agents.aupdate(request.path_params["agent_id"], **fields)
    return json_response((await agents_json(client, [agent]))[0])


@endpoint
async def delete(request: Request) -> Response:
    agent_id = request.path_params["agent_id"]
    await client_of(request).agents.adelete(agent_id)
    return json_response({"message": f"Agent id={agent_id} successfully deleted"})


def _strip_messages(af: dict[str, Any]) -> dict[str, Any]:
    for agent in af.get("agents") or []:
        if isinstance(agent, dict):
            agent["messages"], agent["in_context_message_ids"] = [], []
    return af


@endpoint
async def export(request: Request) -> Response:
    """The Agent File as JSON (letta_client returns it as a string: ``json.loads`` it)."""
    af = await client_of(request).agents.aexport_file(request.path_params["agent_id"])
    return json_response(_strip_messages(af) if query_bool(request, "scrub_messages", False) else af)


@endpoint
async def import_file(request: Request) -> Response:
    """letta_client's multipart upload. A tool the store already has is never overwritten by a file (files
    are untrusted here: README "Agent Files"); the imported agents use the stored one."""
    async with request.form() as form:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidArgumentError("the import needs the Agent File as the multipart field 'file' "
                                       "(client.agents.import_file(file=open('x.af', 'rb'))).")
        data: Any = await upload.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if fields.get("strip_messages", "").lower() == "true":
        with contextlib.suppress(ValueError, AttributeError):  # not JSON: the import below says what is wrong
            data = _strip_messages(json.loads(data))
    report = await client_of(request).agents.aimport_file(
        data, model=fields.get("model") or fields.get("override_model_handle"),
        embedding=fields.get("embedding") or fields.get("override_embedding_handle"),
        name=fields.get("name") or fields.get("override_name"),
        suffix="_copy" if fields.get("append_copy_suffix", "").lower() == "true" else "", existing_tools="keep")
    return json_response({"agent_ids": [a.id for a in report.agents]})


ROUTES = [
    Route("/v1/agents/", create, methods=["POST"]),
    Route("/v1/agents/", list_agents, methods=["GET"]),
    Route("/v1/agents/import", import_file, methods=["POST"]),
    Route("/v1/agents/{agent_id}", retrieve, methods=["GET"]),
    Route("/v1/agents/{agent_id}", update, methods=["PATCH"]),
    Route("/v1/agents/{agent_id}", delete, methods=["DELETE"]),
    Route("/v1/agents/{agent_id}/export", export, methods=["GET"]),
]
