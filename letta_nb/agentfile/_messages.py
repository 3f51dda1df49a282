"""An agent's messages between Letta's Agent File shape and letta_nb's recall memory.

Letta keeps every message and a list of the ids in the context window (``in_context_message_ids``), whose
first entry is its compiled system prompt. letta_nb keeps messages in ``seq`` order and a window that is
their suffix from ``context_start_seq``, and builds the system prompt itself each step from the agent's
``system`` and blocks. So on import the messages outside the window come first (file order), then the
window's in the file's window order; a leading system message stays in recall just before the window
(letta_nb's own prompt takes its place). Messages keep their role, text, tool calls (ids included, so a
call still pairs with its result) and times; a tool message with several returns becomes one message per
return, as chat models read them. Content parts letta_nb does not keep (reasoning, images) and approval
messages are counted for the report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

from letta_nb._text import clean_text
from letta_nb.llm.base import ToolCall
from letta_nb.runtime.memory import compile_system_prompt
from letta_nb.schemas import AgentState, Message
from letta_nb.store.ids import new_id, utcnow

__all__ = ["export_messages", "import_messages"]


def _when(value: Any, where: str) -> dt.datetime:
    from letta_nb.agentfile._schema import AgentFileError

    if value is None:
        return utcnow()
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise AgentFileError(f"{where}.created_at is {str(value)[:40]!r}, not an ISO-8601 time.") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _text(content: Any, dropped: Counter[str]) -> str | None:
    if content is None or isinstance(content, str):
        return None if content is None else clean_text(content)
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            dropped[f"{kind or type(part).__name__} content part"] += 1
    return clean_text("\n".join(texts)) if texts else None


def import_messages(agent: dict[str, Any], agent_id: str, where: str) -> tuple[list[Message], int, Counter[str]]:
    """(messages with seq 1.., the seq the context window starts at, content parts not kept by kind)."""
    raw = list(agent.get("messages") or [])
    in_context = agent.get("in_context_message_ids")
    window_ids = [m["id"] for m in raw] if in_context is None else list(dict.fromkeys(in_context))
    inside = set(window_ids)
    by_id = {m["id"]: (i, m) for i, m in enumerate(raw)}
    ordered = [(i, m) for i, m in enumerate(raw) if m["id"] not in inside] + [by_id[x] for x in window_ids]
    lead = window_ids[0] if window_ids and by_id[window_ids[0]][1]["role"] == "system" else None
    dropped: Counter[str] = Counter()
    out: list[Message] = []
    start = None
    call_names: dict[str, str] = {}
    for i, msg in ordered:
        at = f"{where}.messages[{i}]"
        if msg["role"] == "approval":  # a human-in-the-loop approval: letta_nb has no approvals to attach it to
            dropped["approval message"] += 1
            continue
        if start is None and msg["id"] in inside and msg["id"] != lead:
            start = len(out) + 1
        for m in _convert(msg, at, dropped, call_names):
            out.append(Message(id=new_id("message"), agent_id=agent_id, seq=len(out) + 1, created_at=m["created_at"],
                               role=m["role"], content=m["content"], tool_calls=m["tool_calls"],
                               tool_call_id=m["tool_call_id"], name=m["name"], status=m["status"]))
    return out, start if start is not None else len(out) + 1, dropped


def _convert(msg: dict[str, Any], at: str, dropped: Counter[str],
             call_names: dict[str, str]) -> list[dict[str, Any]]:
    role = "tool" if msg["role"] == "function" else msg["role"]
    when = _when(msg.get("created_at"), at)
    content = _text(msg.get("content"), dropped)
    calls = []
    for call in msg.get("tool_calls") or []:
        fn = call["function"]
        args = fn.get("arguments")
        args = args if isinstance(args, str) else json.dumps(args if args is not None else {})
        calls.append(ToolCall(call["id"], fn["name"], clean_text(args)))
        call_names[call["id"]] = fn["name"]
    call_id: str = msg.get("tool_call_id") or ""
    base: dict[str, Any] = {"role": role, "content": content, "tool_calls": tuple(calls),
                            "tool_call_id": call_id or None, "name": msg.get("name"), "status": None,
                            "created_at": when}
    returns = [r for r in msg.get("tool_returns") or [] if isinstance(r, dict)]
    if role != "tool" or not returns:
        if role == "tool":
            base["name"] = base["name"] or call_names.get(call_id)
        return [base]
    out = []
    for r in returns:
        this_id = str(r.get("tool_call_id") or call_id)
        text = r.get("func_response")
        text = content if len(returns) == 1 and content is not None else (
            text if isinstance(text, str) else json.dumps(text))
        out.append({**base, "content": text, "tool_call_id": this_id or None,
                    "name": base["name"] or call_names.get(this_id),
                    "status": "error" if r.get("status") == "error" else "success"})
    return out


def export_messages(agent: AgentState, messages: list[Message], file_agent_id: str,
                    next_id: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(the agent's messages as Agent File messages, the in-context ids). ``next_id()`` numbers them.

    Letta's window starts with its system prompt: the stored system message just before letta_nb's window
    when there is one (an imported agent's), else one compiled now from the agent's system and blocks."""
    window_start = agent.context_start_seq
    before = [m for m in messages if m.seq < window_start]
    lead: Message | None = before[-1] if before and before[-1].role == "system" else None
    out: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    for m in messages:
        ids[m.id] = next_id()
        out.append(_message_entry(m, ids[m.id], file_agent_id))
    if lead is None:
        system = Message(id="", agent_id=agent.id, seq=window_start, role="system",
                         content=compile_system_prompt(agent.system, agent.blocks), created_at=utcnow())
        sys_id = next_id()
        at = next((k for k, m in enumerate(messages) if m.seq >= window_start), len(messages))
        out.insert(at, _message_entry(system, sys_id, file_agent_id))
        window = [sys_id]
    else:
        window = [ids[lead.id]]
    window += [ids[m.id] for m in messages if m.seq >= window_start]
    return out, window


def _message_entry(m: Message, file_id: str, file_agent_id: str) -> dict[str, Any]:
    returns = []
    if m.role == "tool":
        returns = [{"tool_call_id": m.tool_call_id, "status": m.status or "success", "stdout": None, "stderr": None,
                    "func_response": m.content}]
    return {
        "type": "message", "role": m.role,
        "content": [] if m.content is None else [{"type": "text", "text": m.content}],
        "name": m.name, "otid": None, "sender_id": None, "batch_item_id": None, "group_id": None, "id": file_id,
        "model": None, "agent_id": file_agent_id,
        "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                       for c in m.tool_calls] or None,
        "tool_call_id": m.tool_call_id, "tool_returns": returns, "created_at": m.created_at.isoformat(),
        "approve": None, "approval_request_id": None, "denial_reason": None, "approvals": [],
    }
