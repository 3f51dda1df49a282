"""Tool rules and agent types as letta_nb stores them: Letta's JSON shapes, checked once on the way in.

Letta keeps an agent's tool rules as a list of JSON objects discriminated by ``type`` (``run_first``,
``exit_loop``, ``continue_loop``, ``constrain_child_tools``, ``conditional``, ``max_count_per_step``,
``parent_last_tool``, ``required_before_exit``, ``requires_approval``); Agent Files carry them in that form,
and letta_client sends them so. They are stored verbatim-but-normalised (known keys only, defaults filled),
so an exported agent gives Letta back what it gave us. :func:`normalize` is the single gate: the API,
``agents.update`` and Agent File import all pass through it, and a bad rule is refused naming its index,
its field and what was expected, before anything is written.

Enforcement (which tools a step may offer, which call ends the turn) lives with the agent loop; this
module only says what a valid rule is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from letta_nb.errors import InvalidArgumentError

__all__ = ["AGENT_TYPES", "DEFAULT_AGENT_TYPE", "RULE_TYPES", "agent_type_arg", "normalize"]

DEFAULT_AGENT_TYPE = "memgpt_agent"
# memgpt_agent: the reply goes through send_message; letta_v1_agent: the model's content is the reply and a
# step without tool calls ends the turn (Letta's two agent loops).
AGENT_TYPES = ("memgpt_agent", "letta_v1_agent")

# type -> (required keys with their expected kind, optional keys with their defaults)
_STR_LIST = "a list of tool names"
RULE_TYPES: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "run_first": ({}, {"args": None}),
    "exit_loop": ({}, {}),
    "continue_loop": ({}, {}),
    "constrain_child_tools": ({"children": _STR_LIST}, {"child_arg_nodes": None}),
    "conditional": ({"child_output_mapping": "an object mapping tool outputs to tool names"},
                    {"default_child": None, "require_output_mapping": False}),
    "max_count_per_step": ({"max_count_limit": "a positive integer"}, {}),
    "parent_last_tool": ({"children": _STR_LIST}, {}),
    "required_before_exit": ({}, {}),
    "requires_approval": ({}, {}),
}
_COMMON = {"tool_name", "type", "prompt_template"}
# Letta 0.5's class names, still found in old Agent Files
_OLD_NAMES = {"InitToolRule": "run_first", "TerminalToolRule": "exit_loop", "ToolRule": "constrain_child_tools",
              "ChildToolRule": "constrain_child_tools", "ConditionalToolRule": "conditional"}


def agent_type_arg(value: Any, argument: str = "agent_type") -> str:
    """One of :data:`AGENT_TYPES` (letta_client's enum members are accepted by their value)."""
    value = getattr(value, "value", value)
    if value not in AGENT_TYPES:
        raise InvalidArgumentError(
            f"{argument} must be one of {', '.join(map(repr, AGENT_TYPES))}, got {value!r}: 'memgpt_agent' replies "
            "through send_message, 'letta_v1_agent' replies with the model's own text.")
    return str(value)


def normalize(rules: Any, argument: str = "tool_rules") -> list[dict[str, Any]]:
    """Check ``rules`` (a list of dicts or of objects with ``model_dump()``, e.g. letta_client's rule
    models) and return plain dicts: known keys only, in Letta's shape, defaults filled in."""
    if rules is None:
        return []
    if isinstance(rules, (str, bytes, Mapping)) or not isinstance(rules, Sequence):
        raise InvalidArgumentError(f"{argument} must be a list of rules (dicts with 'type' and 'tool_name'), "
                                   f"got {type(rules).__name__}")
    return [_rule(rule, f"{argument}[{i}]") for i, rule in enumerate(rules)]


def _rule(rule: Any, where: str) -> dict[str, Any]:
    if hasattr(rule, "model_dump"):
        rule = rule.model_dump(exclude_none=True)
    if not isinstance(rule, Mapping):
        raise InvalidArgumentError(f"{where} must be a dict with 'type' and 'tool_name', got {type(rule).__name__}")
    kind: Any = rule.get("type")  # a str, or an enum member (its .value is the name)
    kind = _OLD_NAMES.get(kind, getattr(kind, "value", kind))
    if kind not in RULE_TYPES:
        raise InvalidArgumentError(f"{where}['type'] is {kind!r}; expected one of: {', '.join(RULE_TYPES)}")
    name = rule.get("tool_name")
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{where}['tool_name'] must be a tool's name (a non-empty string), got {name!r}")
    required, optional = RULE_TYPES[kind]
    unknown = set(rule) - _COMMON - set(required) - set(optional)
    if unknown:
        raise InvalidArgumentError(f"{where} ({kind}) has unknown key(s) {sorted(unknown)}; a {kind} rule takes "
                                   f"{sorted(_COMMON | set(required) | set(optional))}")
    out: dict[str, Any] = {"type": kind, "tool_name": name}
    for key, expected in required.items():
        if key not in rule:
            raise InvalidArgumentError(f"{where} ({kind} on {name!r}) needs {key!r}: {expected}")
        out[key] = _field(key, rule[key], f"{where}[{key!r}]", expected)
    for key, default in optional.items():
        out[key] = rule.get(key, default)
    if rule.get("prompt_template") is not None:
        out["prompt_template"] = str(rule["prompt_template"])
    if kind == "conditional" and out["default_child"] is not None and not isinstance(out["default_child"], str):
        raise InvalidArgumentError(f"{where}['default_child'] must be a tool name or None")
    return out


def _field(key: str, value: Any, where: str, expected: str) -> Any:
    if expected == _STR_LIST:
        if isinstance(value, str) or not isinstance(value, Sequence) or not all(
                isinstance(v, str) and v for v in value):
            raise InvalidArgumentError(f"{where} must be {expected}, got {value!r}")
        return list(value)
    if key == "max_count_limit":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{where} must be {expected}, got {value!r}")
        return value
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgumentError(f"{where} must be {expected}, got {value!r}")
    return {str(k): v for k, v in value.items()}  # JSON object keys are strings; Letta compares str(output)
