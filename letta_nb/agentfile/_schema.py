"""Reading an Agent File (``.af``): bytes to a checked document, or an error that says what is wrong and where.

An Agent File is the JSON of Letta's ``AgentFileSchema`` (letta/schemas/agent_file.py on Letta's ``archive``
branch): lists of ``agents`` (each with its ``messages`` and ``in_context_message_ids``), ``blocks``,
``tools``, ``groups``, ``files``, ``sources`` and ``mcp_servers``, whose entities refer to each other by
file-local ids with a type prefix (``agent-0``, ``block-3``, ``tool-1``, ``message-7``, ``group-0``). Some
files in the wild are a JSON string holding that JSON (written twice by an exporter): both load.

Everything is checked here, before anything is mapped or written: the JSON itself (a truncated or
malformed file is an error naming the line, column and character where it breaks), each entity's required
fields and their types (named by path, ``agents[0].messages[3].role``), and every reference (a tool id an
agent lists must be a tool of the file). Import can then map and write in one go; nothing is half-imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from letta_nb.errors import InvalidArgumentError

META_KEY = "letta_agent_file"

__all__ = ["AgentFile", "AgentFileError", "read_agent_file"]

_LISTS = ("agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers")
_PREFIX = {"agents": "agent", "groups": "group", "blocks": "block", "files": "file", "sources": "source",
           "tools": "tool", "mcp_servers": "mcp_server"}
ROLES = ("system", "user", "assistant", "tool", "function", "approval")  # Letta's MessageRole
MAX_BYTES = 512 * 1024 * 1024


class AgentFileError(InvalidArgumentError):
    """An Agent File that cannot be imported: malformed JSON, a missing or mistyped field, a dangling id."""


@dataclass
class AgentFile:
    """A checked Agent File: the document plus its entities indexed by their file ids."""

    doc: dict[str, Any]
    double_encoded: bool = False
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def agents(self) -> list[dict[str, Any]]:
        return list(self.doc["agents"])

    def unused(self, key: str) -> list[dict[str, Any]]:
        return list(self.doc.get(key) or [])


def read_agent_file(source: Any) -> AgentFile:
    """Load and check an Agent File from a path, bytes/str of JSON text already read, or a parsed dict."""
    if isinstance(source, Mapping):
        return check(dict(source))
    text = _text(source)
    value = _parse(text, "the file")
    double = isinstance(value, str)
    if double:  # a JSON string holding the JSON document
        value = _parse(value, "the JSON string the file holds (a double-encoded Agent File)")
    if not isinstance(value, dict):
        raise AgentFileError(f"An Agent File is a JSON object with 'agents', 'blocks', 'tools', ...; this one is a "
                             f"JSON {type(value).__name__}. Is it an Agent File (.af) exported by Letta?")
    af = check(value)
    af.double_encoded = double
    return af


def _text(source: Any) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        where = "the bytes passed"
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            size = os.path.getsize(path)
            if size > MAX_BYTES:
                raise AgentFileError(f"path_or_bytes: {path!r} is {size:,} bytes; an Agent File is at most "
                                     f"{MAX_BYTES:,}. Is it the right file?")
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise AgentFileError(f"path_or_bytes: no file at {path!r}. Pass the path of an .af file, or its "
                                 "content as bytes.") from None
        except IsADirectoryError:
            raise AgentFileError(f"path_or_bytes: {path!r} is a directory; pass the path of one .af file.") from None
        except OSError as e:
            raise AgentFileError(f"path_or_bytes: cannot read {path!r} ({e.strerror}).") from None
        where = repr(path)
    else:
        raise AgentFileError(f"path_or_bytes must be a path (str or os.PathLike), bytes or a dict, got "
                             f"{type(source).__name__}.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AgentFileError(f"{where} is not UTF-8 text (invalid byte at offset {e.start}); an Agent File is "
                             "UTF-8 JSON.") from None


def _parse(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # Past the end, or a string never closed (JSON text cannot hold a raw newline, so only the end closes it)
        ended = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        hint = (" The text ends before the JSON does: the file looks truncated (an incomplete download or copy); "
                "get the whole file again." if ended else " Fix the JSON there, or export the agent again.")
        raise AgentFileError(f"{what} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}, "
                             f"character {e.pos:,} of {len(text):,}).{hint}") from None
    except RecursionError:
        raise AgentFileError(f"{what} nests JSON too deeply to be an Agent File.") from None


# ---- structure ----------------------------------------------------------------------------------------

def _need(obj: Mapping[str, Any], key: str, kinds: Any, where: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if value is None or not isinstance(value, kinds) or (kinds is int and isinstance(value, bool)):
        names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "an object"}
        want = " or ".join(names.get(k, k.__name__) for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        got = "missing" if key not in obj else f"{type(value).__name__} {_show(value)}"
        raise AgentFileError(f"{where}.{key} must be {want}{' or null' if optional else ''}; it is {got}.")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _ref(value: Any, known: Mapping[str, Any], where: str, kind: str) -> str:
    if not isinstance(value, str) or value not in known:
        listed = ", ".join(list(known)[:12]) or "none"
        raise AgentFileError(f"{where} is {_show(value)}, which is not a {kind} of this file ({kind}s: {listed}).")
    return value


def check(doc: dict[str, Any]) -> AgentFile:
    """Check the document's shape and references; the index of its entities."""
    if "agents" not in doc:
        raise AgentFileError("The Agent File has no 'agents' list (top-level keys: "
                             f"{', '.join(sorted(doc)[:12]) or 'none'}). Is it an Agent File exported by Letta?")
    seen: dict[str, str] = {}
    for key in _LISTS:
        items = _need(doc, key, list, "file", optional=key != "agents") or []
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict):
                raise AgentFileError(f"{where} must be an object, got {type(item).__name__}.")
            ident = _need(item, "id", str, where)
            if not ident.startswith(_PREFIX[key] + "-"):
                raise AgentFileError(f"{where}.id is {ident!r}; ids of {key} start with '{_PREFIX[key]}-'.")
            if ident in seen:
                raise AgentFileError(f"{where}.id {ident!r} is used twice (also by {seen[ident]}); ids must be unique.")
            seen[ident] = where
    if not doc["agents"]:
        raise AgentFileError("The Agent File's 'agents' list is empty: there is nothing to import.")
    af = AgentFile(doc, tools={t["id"]: t for t in doc.get("tools") or []},
                   blocks={b["id"]: b for b in doc.get("blocks") or []},
                   groups={g["id"]: g for g in doc.get("groups") or []})
    for i, tool in enumerate(doc.get("tools") or []):
        _check_tool(tool, f"tools[{i}]")
    for i, block in enumerate(doc.get("blocks") or []):
        _check_block(block, f"blocks[{i}]")
    agents = {a["id"]: a for a in doc["agents"]}
    for i, agent in enumerate(doc["agents"]):
        _check_agent(agent, f"agents[{i}]", af, seen)
    for i, group in enumerate(doc.get("groups") or []):
        where = f"groups[{i}]"
        for j, ref in enumerate(_need(group, "agent_ids", list, where)):
            _ref(ref, agents, f"{where}.agent_ids[{j}]", "agent")
        config = _need(group, "manager_config", dict, where, optional=True) or {}
        if config.get("manager_agent_id") is not None:
            _ref(config["manager_agent_id"], agents, f"{where}.manager_config.manager_agent_id", "agent")
    return af


def _check_tool(tool: dict[str, Any], where: str) -> None:
    _need(tool, "name", str, where)
    for key in ("tool_type", "source_code", "description", "source_type"):
        _need(tool, key, str, where, optional=True)
    schema = _need(tool, "json_schema", dict, where, optional=True)
    if schema is not None:
        _need(schema, "parameters", dict, f"{where}.json_schema", optional=True)


def _check_block(block: dict[str, Any], where: str) -> None:
    _need(block, "label", str, where)
    _need(block, "value", str, where)
    _need(block, "limit", int, where, optional=True)
    _need(block, "read_only", bool, where, optional=True)
    _need(block, "description", str, where, optional=True)


def _check_agent(agent: dict[str, Any], where: str, af: AgentFile, seen: dict[str, str]) -> None:
    _need(agent, "name", str, where)
    for key in ("system", "agent_type", "model", "embedding", "description"):
        _need(agent, key, str, where, optional=True)
    for key in ("llm_config", "embedding_config", "metadata"):
        _need(agent, key, dict, where, optional=True)
    for key in ("tool_rules", "tags"):
        _need(agent, key, list, where, optional=True)
    for j, ref in enumerate(_need(agent, "tool_ids", list, where, optional=True) or []):
        _ref(ref, af.tools, f"{where}.tool_ids[{j}]", "tool")
    for j, ref in enumerate(_need(agent, "block_ids", list, where, optional=True) or []):
        _ref(ref, af.blocks, f"{where}.block_ids[{j}]", "block")
    for j, ref in enumerate(_need(agent, "group_ids", list, where, optional=True) or []):
        _ref(ref, af.groups, f"{where}.group_ids[{j}]", "group")
    messages: dict[str, dict[str, Any]] = {}
    for j, msg in enumerate(_need(agent, "messages", list, where, optional=True) or []):
        at = f"{where}.messages[{j}]"
        if not isinstance(msg, dict):
            raise AgentFileError(f"{at} must be an object, got {type(msg).__name__}.")
        ident = _need(msg, "id", str, at)
        if not ident.startswith("message-"):
            raise AgentFileError(f"{at}.id is {ident!r}; message ids start with 'message-'.")
        if ident in seen or ident in messages:
            raise AgentFileError(f"{at}.id {ident!r} is used twice; ids must be unique.")
        messages[ident], seen[ident] = msg, at
        role = _need(msg, "role", str, at)
        if role not in ROLES:
            raise AgentFileError(f"{at}.role is {role!r}; expected one of {', '.join(ROLES)}.")
        content = msg.get("content")
        if content is not None and not isinstance(content, str | list):
            raise AgentFileError(f"{at}.content must be a string or a list of content parts, got "
                                 f"{type(content).__name__}.")
        for k, call in enumerate(_need(msg, "tool_calls", list, at, optional=True) or []):
            fn = _need(call, "function", dict, f"{at}.tool_calls[{k}]") if isinstance(call, dict) else None
            if fn is None:
                raise AgentFileError(f"{at}.tool_calls[{k}] must be an object with 'id' and 'function'.")
            _need(call, "id", str, f"{at}.tool_calls[{k}]")
            _need(fn, "name", str, f"{at}.tool_calls[{k}].function")
        _need(msg, "tool_call_id", str, at, optional=True)
        _need(msg, "tool_returns", list, at, optional=True)
    for j, ref in enumerate(_need(agent, "in_context_message_ids", list, where, optional=True) or []):
        _ref(ref, messages, f"{where}.in_context_message_ids[{j}]", "message of this agent")
