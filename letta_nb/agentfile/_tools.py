"""An Agent File's tools as letta_nb tools, and letta_nb tools as Agent File tools.

Four kinds, decided by Letta's ``tool_type`` and name:

- **base**: Letta's base and memory tools that letta_nb has under the same name and arguments
  (``send_message``, ``conversation_search``, ``archival_memory_*``, ``core_memory_*``, ``memory_insert``,
  ``memory_replace``, ``memory_rethink``): the agent gets letta_nb's own; nothing is stored.
- **custom**: a tool with Python source. Imported code is untrusted: it is stored unsigned and sandboxed
  (runtime/trust.py), so it runs only in the strict sandbox without network until the user reads it and
  ``client.tools.trust(name)`` it (then it still runs sandboxed). It is parsed, never run, on import, and
  each call waits for the user's approval (runtime/approvals.py) until it is registered again without.
- **shim**: a Letta tool letta_nb can honour with a few lines of its own (``memory_finish_edits``, a no-op
  a sleep-time agent calls to end its edits). Our code, so signed.
- **stub**: everything letta_nb cannot run (Letta's built-in ``web_search``/``fetch_webpage``/``run_code``,
  file tools, the ``memory`` omni-tool, multi-agent tools, MCP tools, TypeScript tools). The agent keeps
  the tool with the file's schema, so its prompt and tool rules still make sense; calling it returns a tool
  error that says what the tool was and why letta_nb cannot run it. Our code, so signed.

A shim or stub's source starts with a marker naming the Letta tool type, so export writes the tool back as
Letta's own (no source) and a round trip gives the same file.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from letta_nb.runtime import trust
from letta_nb.runtime.base_tools import BASE_TOOLS
from letta_nb.store.records import ToolRecord

__all__ = ["ToolPlan", "base_tool_entry", "export_tool", "plan_tool", "same_tool"]

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}")
_MARK = re.compile(r"^# letta_nb (stub|shim) of Letta tool type (\w+)\n")
_BASE_TYPES = {"send_message": "letta_core", "conversation_search": "letta_core",
               "archival_memory_insert": "letta_core", "archival_memory_search": "letta_core",
               "core_memory_append": "letta_memory_core", "core_memory_replace": "letta_memory_core",
               "memory_insert": "letta_sleeptime_core", "memory_replace": "letta_sleeptime_core",
               "memory_rethink": "letta_sleeptime_core"}
_WHY = {
    "letta_builtin": "a Letta built-in tool that runs on Letta's servers",
    "letta_files_core": "a Letta file tool (letta_nb attaches no file sources; upload files to archival memory "
                        "with client.agents.files.upload and search them with archival_memory_search)",
    "letta_multi_agent_core": "a Letta multi-agent tool (letta_nb has no agent-to-agent messaging)",
    "letta_voice_sleeptime_core": "a Letta voice sleep-time tool",
    "external_mcp": "an MCP tool (letta_nb connects to no MCP servers)",
    "external_composio": "a Composio tool (deprecated by Letta)",
    "external_langchain": "a LangChain tool (deprecated by Letta)",
}
_SHIMS = {"memory_finish_edits": ("letta_sleeptime_core", "def memory_finish_edits() -> None:\n    return None\n")}


@dataclass(frozen=True)
class ToolPlan:
    """What one tool of the file becomes: ``kind`` base | custom | shim | stub; ``record`` to store (None for
    base); ``note`` for the report."""

    name: str
    kind: str
    record: ToolRecord | None
    note: str = ""


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of the tool's arguments, without Letta's ``request_heartbeat`` (which letta_nb's loop does
    not use and a function would not accept)."""
    params = copy.deepcopy((tool.get("json_schema") or {}).get("parameters") or {})
    params.setdefault("type", "object")
    props = params.setdefault("properties", {})
    props.pop("request_heartbeat", None)
    params["required"] = [r for r in params.get("required") or [] if r != "request_heartbeat"]
    return params


def _signed(record: ToolRecord) -> ToolRecord:
    return dataclasses.replace(record, signature=trust.sign("tool", trust.tool_fields(record)))


def plan_tool(tool: dict[str, Any], where: str) -> ToolPlan:
    """What the file's ``tool`` becomes (``where`` names it in errors: ``tools[3]``)."""
    from letta_nb.agentfile._schema import AgentFileError

    name, kind = tool["name"], (tool.get("tool_type") or "custom")
    if not _NAME.fullmatch(name):
        raise AgentFileError(f"{where}.name {name!r} is not a tool name letta_nb can offer a model (letters, digits "
                             "and underscores, not starting with a digit, at most 64 characters).")
    description = tool.get("description") or (tool.get("json_schema") or {}).get("description") or ""
    if name in BASE_TOOLS:
        return ToolPlan(name, "base", None, "" if kind != "custom" else "the file's own code is replaced by "
                        "letta_nb's base tool of that name")
    if name in _SHIMS and kind != "custom":
        letta_type, body = _SHIMS[name]
        source = f"# letta_nb shim of Letta tool type {letta_type}\n{body}"
        return ToolPlan(name, "shim", _signed(_record(name, description, _parameters(tool), source, sandbox=False)),
                        "a no-op, as in Letta")
    code: str | None = tool.get("source_code")
    python = (tool.get("source_type") or "python") == "python"
    if kind == "custom" and code and python:
        return ToolPlan(name, "custom", _record(name, description, _parameters(tool), code, sandbox=True,
                                                parallel=bool(tool.get("enable_parallel_execution")),
                                                approval=True),
                        _source_note(name, code))
    why = _WHY.get(kind) or (
        f"a Letta {kind} tool letta_nb has no equivalent of" if kind != "custom" else
        "a custom tool with no Python source" if python else "a custom tool written in TypeScript")
    message = (f"{name} is {why}; letta_nb cannot run it here. Answer without it, or tell the user the tool is "
               "unavailable.")
    source = (f"# letta_nb stub of Letta tool type {kind if re.fullmatch(r'[a-z_]+', kind) else 'custom'}\n"
              f"def {name}(**kwargs):\n    raise NotImplementedError({message!r})\n")
    return ToolPlan(name, "stub", _signed(_record(name, description, _parameters(tool), source, sandbox=False)),
                    f"{why}: calling it returns a tool error")


def _record(name: str, description: str, parameters: dict[str, Any], source: str, *, sandbox: bool,
            parallel: bool = False, approval: bool = False) -> ToolRecord:
    return ToolRecord(name=name, description=description, json_schema=parameters, source=source,
                      parallel_safe=parallel, sandbox=sandbox, sandbox_mode="on" if sandbox else "off",
                      network=False, timeout=30.0, requires_approval=approval)


def _source_note(name: str, source: str) -> str:
    """What the report says about untrusted source (parsed, never run)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return f"its source does not parse ({e.msg}, line {e.lineno}): calling it will fail"
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if name not in defs:
        return f"its source defines no function {name!r}: calling it will fail"
    args = {a.arg for a in defs[name].args.args + defs[name].args.kwonlyargs}
    note = "sandboxed; runs in the strict sandbox until you read it and client.tools.trust(name)"
    if "agent_state" in args:
        note += "; it takes Letta's agent_state, which a sandboxed tool does not get: calling it will fail"
    return note


def same_tool(a: ToolRecord, b: ToolRecord) -> bool:
    """Whether two tool records are the same tool: same code and schema (how a stored one is isolated and whether
    it is trusted stay the store's: an agent file carries neither)."""
    fields = ("name", "description", "json_schema", "source")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def base_tool_entry(name: str) -> dict[str, Any]:
    """A letta_nb base tool as Letta's own tool of that name (no source: Letta has it built in)."""
    spec = BASE_TOOLS[name]
    kind = _BASE_TYPES.get(name, "letta_core")
    return _entry(name, spec.description, spec.parameters, None, kind)


def export_tool(record: ToolRecord) -> dict[str, Any]:
    """A stored tool as an Agent File tool: a shim or stub goes back to Letta's own, with no source."""
    mark = _MARK.match(record.source or "")
    if mark:
        return _entry(record.name, record.description, record.json_schema, None, mark.group(2))
    return _entry(record.name, record.description, record.json_schema, record.source, "custom",
                  parallel=record.parallel_safe)


def _entry(name: str, description: str, parameters: dict[str, Any], source: str | None, kind: str,
           *, parallel: bool = False) -> dict[str, Any]:
    return {"tool_type": kind, "description": description, "source_type": "python", "name": name,
            "tags": [] if kind == "custom" else [kind], "source_code": source,
            "json_schema": {"name": name, "description": description, "parameters": copy.deepcopy(parameters)},
            "args_json_schema": None, "return_char_limit": 20000, "pip_requirements": None,
            "npm_requirements": None, "default_requires_approval": None, "enable_parallel_execution": parallel,
            "metadata_": None}
