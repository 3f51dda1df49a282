"""letta_nb's objects as Letta's REST API spells them: the JSON bodies letta_client 1.x parses.

One function per wire shape, all pure (no I/O), so the routes stay thin and one place knows the field names.
The mapping follows Letta's archived server (``letta/schemas/letta_message.py``, ``agent.py``): a stored
assistant message with a ``send_message`` call is an ``assistant_message`` (its inner thoughts a
``reasoning_message`` before it, with the same id, as Letta splits one stored message), other calls are
``tool_call_message``s, tool rows ``tool_return_message``s. Every message carries ``id``, ``date`` and
``message_type`` (the SDK's union is discriminated on it). Cursor pagination uses the stored message's id,
so a page may end in either half of a split message and still resume exactly.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import AgentState, Block, Message, Passage, Response

__all__ = ["agent_json", "block_json", "message_json", "passage_json", "response_json", "tool_json"]

# Letta's StopReasonType; a reason letta_nb has and Letta does not is sent as the closest one.
_STOP_REASONS = {"end_turn", "error", "llm_api_error", "invalid_llm_response", "invalid_tool_call", "max_steps",
                 "max_tokens_exceeded", "no_tool_call", "tool_rule", "cancelled", "insufficient_credits",
                 "requires_approval", "context_window_overflow_in_system_prompt"}


def stop_reason(reason: str) -> str:
    return reason if reason in _STOP_REASONS else "error"


def _date(when: dt.datetime) -> str:
    return when.isoformat()


def block_json(block: Block, agent_id: str | None = None) -> dict[str, Any]:
    return {"id": block.id, "label": block.label, "value": block.value, "limit": block.limit,
            "description": block.description, "read_only": block.read_only, "metadata": {},
            **({"agent_id": agent_id} if agent_id else {})}


def tool_json(spec: ToolSpec, tool_id: str | None = None) -> dict[str, Any]:
    """A tool; ``tool_id`` is its stored row's id (base tools have none: their name stands in, and the
    routes accept a name wherever letta_client sends an id)."""
    return {"id": tool_id or spec.name, "name": spec.name, "description": spec.description,
            "json_schema": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
            "source_code": spec.source, "source_type": "python", "tags": [],
            "tool_type": "custom" if tool_id else "letta_core", "return_char_limit": spec.return_char_limit,
            "enable_parallel_execution": spec.parallel_safe, "default_requires_approval": spec.requires_approval}


def agent_json(agent: AgentState, tools: list[dict[str, Any]], context_window: int,
               embedding_dim: int) -> dict[str, Any]:
    blocks = [block_json(b, agent.id) for b in agent.blocks]
    return {
        "id": agent.id, "name": agent.name, "agent_type": agent.agent_type, "system": agent.system,
        "tags": list(agent.tags), "metadata": dict(agent.metadata), "created_at": _date(agent.created_at),
        "blocks": blocks, "memory": {"blocks": blocks}, "tools": tools, "sources": [],
        "tool_rules": list(agent.tool_rules), "model": agent.model, "embedding": agent.embedding,
        "llm_config": {"model": agent.model, "handle": agent.model, "context_window": context_window,
                       "api_model_endpoint_type": "openai", "model_endpoint_type": "openai"},
        "embedding_config": {"embedding_model": agent.embedding, "handle": agent.embedding,
                             "embedding_dim": embedding_dim, "embedding_endpoint_type": "openai"},
        "message_ids": [],
    }


def _call(call: Any) -> dict[str, str]:
    return {"name": call.name, "arguments": call.arguments, "tool_call_id": call.id}


def message_json(m: Message) -> list[dict[str, Any]]:
    """One stored message as Letta's message union (one or two items, sharing the stored id)."""
    base: dict[str, Any] = {"id": m.id, "date": _date(m.created_at), "step_id": m.step_id}
    if m.role == "user":
        return [{**base, "message_type": "user_message", "content": m.content or ""}]
    if m.role == "system":
        return [{**base, "message_type": "system_message", "content": m.content or ""}]
    if m.role == "tool":
        return [{**base, "message_type": "tool_return_message", "tool_return": m.content or "",
                 "status": "error" if m.status == "error" else "success", "tool_call_id": m.tool_call_id or "",
                 "name": m.name}]
    if not m.tool_calls:
        return [{**base, "message_type": "assistant_message", "content": m.content or ""}]
    out = [{**base, "message_type": "reasoning_message", "reasoning": m.content}] if m.content else []
    if m.tool_calls[0].name == "send_message":
        out.append({**base, "message_type": "assistant_message", "content": m.text})
    else:
        calls = [_call(c) for c in m.tool_calls]
        out.append({**base, "message_type": "tool_call_message", "tool_call": calls[0], "tool_calls": calls})
    return out


def messages_json(messages: list[Message]) -> list[dict[str, Any]]:
    return [item for m in messages for item in message_json(m)]


def usage_json(prompt: int, completion: int, steps: int) -> dict[str, Any]:
    return {"message_type": "usage_statistics", "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "step_count": steps}


def response_json(r: Response) -> dict[str, Any]:
    """LettaResponse: what the turn produced (the user's own message is not echoed, as in Letta)."""
    return {"messages": messages_json([m for m in r.messages if m.role != "user"]),
            "stop_reason": {"message_type": "stop_reason", "stop_reason": stop_reason(r.stop_reason)},
            "usage": usage_json(r.usage.prompt_tokens, r.usage.completion_tokens, len(r.steps))}


def passage_json(p: Passage) -> dict[str, Any]:
    return {"id": p.id, "text": p.text, "agent_id": p.agent_id, "archive_id": p.agent_id, "tags": list(p.tags),
            "created_at": _date(p.created_at), "metadata": {}, "embedding": None, "embedding_config": None}


def search_json(found: list[Passage]) -> dict[str, Any]:
    """An agent's archival search as Letta answers it: ``{count, results: [{id, content, timestamp, tags}]}``."""
    results = [{"id": p.id, "content": p.text, "timestamp": _date(p.created_at), "tags": list(p.tags)}
               for p in found]
    return {"count": len(results), "results": results}


def dumps(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, default=str).encode()
