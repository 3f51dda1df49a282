"""``/v1/agents/{agent_id}/messages``: send (a JSON ``LettaResponse`` or server-sent events) and list.

A turn goes through ``client.agents.messages.acreate``/``astream``, so it queues on the agent's lease behind
the kernel's own turns (and theirs behind it), in arrival order. Before a stream's headers go out the agent
and the input are checked, so an unknown agent is a 404 and an empty input a 422, as for the JSON route;
a failure after that is an ``event: error``. A client that disconnects mid-stream cancels the turn (what the
agent said so far is kept), as closing the iterator does in Python.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from letta_nb._client_args import input_text
from letta_nb.errors import LettaNBError
from letta_nb.runtime import approvals
from letta_nb.serve._request import body_of, client_of, endpoint, json_response, query_int, query_list
from letta_nb.serve._sse import DONE, error_event, event, letta_events
from letta_nb.serve._wire import messages_json, response_json

__all__ = ["ROUTES"]


def _turn_args(body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None, int | None]:
    """(input, messages, max_steps) of a LettaRequest; ``input`` as content parts is one user message."""
    text, messages = body.get("input"), body.get("messages")
    if isinstance(text, list):
        text, messages = None, [{"role": "user", "content": text}] if messages is None else messages
    if approvals.answers_from(messages) is None:
        input_text(text, messages)  # checked now: a bad input is a 422 before a stream starts
    return text, messages, body.get("max_steps")


@endpoint
async def create(request: Request) -> Response:
    body = await body_of(request)
    if body.get("streaming"):
        return await _stream(request, body)
    text, messages, max_steps = _turn_args(body)
    r = await client_of(request).agents.messages.acreate(request.path_params["agent_id"], text, messages=messages,
                                                          max_steps=max_steps)
    return json_response(response_json(r))


@endpoint
async def stream(request: Request) -> Response:
    return await _stream(request, await body_of(request))


async def _stream(request: Request, body: dict[str, Any]) -> Response:
    client, agent_id = client_of(request), request.path_params["agent_id"]
    text, messages, max_steps = _turn_args(body)
    agent = await client.agents.aretrieve(agent_id)  # an unknown agent is a 404, not a broken stream
    tokens = bool(body.get("stream_tokens", False))

    async def events() -> AsyncIterator[bytes]:
        chunks = client.agents.messages.astream(agent.id, text, messages=messages, max_steps=max_steps,
                                                letta_chunks=True)
        async with contextlib.aclosing(chunks):  # type: ignore[type-var]  # an async generator underneath
            try:
                async for item in letta_events(chunks, stream_tokens=tokens):
                    yield event(item)
            except LettaNBError as e:
                yield error_event(type(e).__name__, str(e))
            except Exception as e:  # the stream has begun: say so in it rather than drop the connection
                yield error_event("internal_error", f"{type(e).__name__} in letta_nb's server; see the kernel.")
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@endpoint
async def list_messages(request: Request) -> Response:
    q = request.query_params
    found = await client_of(request).agents.messages.alist(
        request.path_params["agent_id"], before=q.get("before"), after=q.get("after"),
        limit=query_int(request, "limit"), order=q.get("order") or "desc")
    kinds = query_list(request, "include_return_message_types")  # e.g. only assistant_message
    return json_response([m for m in messages_json(found) if kinds is None or m["message_type"] in kinds])


ROUTES = [
    Route("/v1/agents/{agent_id}/messages", create, methods=["POST"]),
    Route("/v1/agents/{agent_id}/messages", list_messages, methods=["GET"]),
    Route("/v1/agents/{agent_id}/messages/stream", stream, methods=["POST"]),
]
