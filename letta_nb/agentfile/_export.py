"""Exporting agents as an Agent File that Letta's importer accepts.

Letta checks an Agent File's ids (``agent-0``, ``block-3``: a type prefix and an integer) and that every
reference resolves inside the file; its pydantic models want an ``llm_config`` and ``embedding_config``
each agent can be created from. Export numbers every entity in the order written and refers only to those
numbers. An agent imported from a sleep-time group is exported with the rest of its group, and what the
import kept under the ``letta_agent_file`` metadata key (Letta's agent type, description, the configs an
override replaced) goes back where Letta reads it, so import -> export -> import gives the same agents.

Never a secret: specs cannot hold keys (llm/registry.py refuses one) and keys live only in the runtime's
memory, which export never reads; a URL's user:password part is dropped, as are config keys that name a
credential, and ``tool_exec_environment_variables`` / ``secrets`` are always empty.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from letta_nb.agentfile._import import letta_nb_type
from letta_nb.agentfile._messages import export_messages
from letta_nb.agentfile._models import embedding_config, llm_config
from letta_nb.agentfile._schema import META_KEY
from letta_nb.agentfile._tools import base_tool_entry, export_tool
from letta_nb.runtime.base_tools import BASE_TOOLS
from letta_nb.schemas import AgentState

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["export_agent_file"]

_CREDENTIAL_KEYS = frozenset({"api_key", "apikey", "access_token", "auth_token", "token", "password", "secret",
                              "secrets", "custom_headers", "authorization", "headers"})


async def export_agent_file(rt: Runtime, agent_id: str, path: str | os.PathLike[str] | None = None) -> Any:
    """The Agent File of an agent (and of the rest of its sleep-time group): a dict, or written to ``path``."""
    agent = await rt.store.load_agent(agent_id)
    agents = [agent]
    group = (agent.metadata.get(META_KEY) or {}).get("group")
    if group:
        others = [a for a in await rt.store.list_agents()
                  if a.id != agent.id and _group_of(a).get("id") == group["id"]]
        agents = sorted([agent, *others], key=lambda a: (a.metadata[META_KEY]["group"]["role"] != "manager",
                                                         a.created_at))
    counters: dict[str, itertools.count[int]] = {}

    def next_id(prefix: str) -> str:
        return f"{prefix}-{next(counters.setdefault(prefix, itertools.count()))}"

    stored = {t.name: t for t in await rt.store.tool_rows()}
    tools: dict[str, dict[str, Any]] = {}
    blocks: list[dict[str, Any]] = []
    out_agents: list[dict[str, Any]] = []
    file_ids = {a.id: next_id("agent") for a in agents}
    for a in agents:
        for name in a.tools:
            if name not in tools:
                entry = base_tool_entry(name) if name in BASE_TOOLS or name not in stored else export_tool(stored[name])
                tools[name] = {"id": next_id("tool"), **entry}
        block_ids = []
        for b in a.blocks:
            block_ids.append(next_id("block"))
            blocks.append({"value": b.value, "limit": b.limit, "project_id": None, "template_name": None,
                           "is_template": False, "template_id": None, "base_template_id": None, "deployment_id": None,
                           "entity_id": None, "preserve_on_migration": False, "label": b.label,
                           "read_only": b.read_only, "description": b.description, "metadata": {}, "hidden": None,
                           "tags": None, "id": block_ids[-1]})
        messages, window = export_messages(a, await rt.store.load_messages(a.id), file_ids[a.id],
                                           lambda: next_id("message"))
        out_agents.append(_agent_entry(a, file_ids[a.id], [tools[n]["id"] for n in a.tools], block_ids, messages,
                                       window))
    groups = _group_entries(agents, file_ids, out_agents, next_id) if group else []
    doc = {"agents": out_agents, "groups": groups, "blocks": blocks, "files": [], "sources": [],
           "tools": list(tools.values()), "mcp_servers": [], "metadata": {"exported_by": "letta_nb"},
           "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    if path is None:
        return doc
    target = Path(path)
    target.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return target


def _group_of(agent: AgentState) -> dict[str, Any]:
    return (agent.metadata.get(META_KEY) or {}).get("group") or {}


def _agent_entry(a: AgentState, file_id: str, tool_ids: list[str], block_ids: list[str],
                 messages: list[dict[str, Any]], window: list[str]) -> dict[str, Any]:
    kept = a.metadata.get(META_KEY) or {}
    letta_type = kept.get("agent_type")
    agent_type = letta_type if letta_type and letta_nb_type(letta_type) == a.agent_type else a.agent_type
    llm = kept["llm_config"] if kept.get("model") == a.model and kept.get("llm_config") else llm_config(a.model)
    emb = (kept["embedding_config"] if kept.get("embedding") == a.embedding and kept.get("embedding_config")
           else embedding_config(a.embedding))
    metadata = {k: v for k, v in a.metadata.items() if k != META_KEY}
    return {
        "name": a.name, "memory_blocks": [], "tools": [], "tool_ids": tool_ids, "source_ids": [], "folder_ids": None,
        "block_ids": block_ids, "tool_rules": [dict(r) for r in a.tool_rules], "tags": list(a.tags), "system": a.system,
        "agent_type": agent_type, "llm_config": _scrub(llm), "embedding_config": _scrub(emb),
        "initial_message_sequence": None, "include_base_tools": False, "include_multi_agent_tools": False,
        "include_base_tool_rules": False, "include_default_source": False, "description": kept.get("description"),
        "metadata": metadata, "model": None, "embedding": None, "context_window_limit": None,
        "embedding_chunk_size": None, "max_tokens": None, "max_reasoning_tokens": None, "enable_reasoner": False,
        "reasoning": None, "from_template": None, "template": False, "project": None,
        "tool_exec_environment_variables": {}, "secrets": None, "memory_variables": None, "project_id": None,
        "template_id": None, "base_template_id": None, "identity_ids": None, "message_buffer_autoclear": False,
        "enable_sleeptime": False, "response_format": None, "timezone": "UTC", "max_files_open": None,
        "per_file_view_window_char_limit": None, "hidden": None, "parallel_tool_calls": None, "id": file_id,
        "in_context_message_ids": window, "messages": messages, "files_agents": [], "group_ids": [],
    }


def _group_entries(agents: list[AgentState], file_ids: dict[str, str], out_agents: list[dict[str, Any]],
                   next_id: Any) -> list[dict[str, Any]]:
    group = agents[0].metadata[META_KEY]["group"]
    managers = [a for a in agents if a.metadata[META_KEY]["group"]["role"] == "manager"]
    gid = next_id("group")
    config = dict(group.get("manager_config") or {})
    if managers:
        config["manager_agent_id"] = file_ids[managers[0].id]
        out_agents[agents.index(managers[0])]["group_ids"] = [gid]
    return [{"agent_ids": [file_ids[a.id] for a in agents if a not in managers], "description": group["description"],
             "manager_config": config, "project_id": None, "shared_block_ids": [], "hidden": None, "id": gid}]


def _scrub(value: Any) -> Any:
    """A config without credentials: keys naming one dropped, a URL's user:password removed."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if str(k).lower() not in _CREDENTIAL_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str) and "@" in value and value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))
    return value
