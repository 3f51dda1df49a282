"""Checking the arguments a model sent against a tool's JSON schema, before the tool runs.

Models send wrong types, extra names and missing arguments; each becomes an
:class:`~letta_nb.errors.InvalidArgumentError` that names the argument and what was expected, so the
executor can hand the model a result it can correct. The schema itself comes from
:mod:`letta_nb.runtime.tool_schema`.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.tool_schema import ToolSpec, _json_type

__all__ = ["validate_arguments"]

_LABELS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
           "array": "an array", "object": "an object", "null": "null"}


def validate_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """Check ``arguments`` against the spec's schema; return them ready to pass (enum values become members).

    Raises :class:`InvalidArgumentError` naming the argument and what was expected.
    """
    props: dict[str, Any] = spec.parameters.get("properties", {})
    for key in arguments:
        if key not in props:
            close = difflib.get_close_matches(key, list(props), n=1, cutoff=0.6)
            raise InvalidArgumentError(
                f"Unexpected argument {key!r} for tool {spec.name!r}."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" It takes: {', '.join(props) or 'no arguments'}."
            )
    missing = [k for k in spec.parameters.get("required", []) if k not in arguments]
    if missing:
        wanted = ", ".join(f"{k!r} ({_describe(props.get(k, {}))})" for k in missing)
        raise InvalidArgumentError(f"Missing required argument(s) for tool {spec.name!r}: {wanted}.")
    checked = {k: _conform(v, props[k], repr(k), spec.name) for k, v in arguments.items()}
    for key, enum_type in spec._enums.items():  # type: ignore[attr-defined]
        if isinstance(checked.get(key), (str, int, float)):
            checked[key] = enum_type(checked[key])
    return checked


def _conform(value: Any, schema: dict[str, Any], where: str, tool: str) -> Any:
    kind = schema.get("type")
    if kind is not None:
        matched = None
        for k in (kind,) if isinstance(kind, str) else kind:  # a plain loop: a turn checks every argument
            if _is_type(value, k):
                matched = k
                break
        if matched is None:
            raise InvalidArgumentError(
                f"Argument {where} of tool {tool!r} must be {_describe(schema)}, "
                f"got {_LABELS.get(_json_type(value), type(value).__name__)}: {json.dumps(value)[:80]}."
            )
        if matched == "integer" and isinstance(value, float):
            value = int(value)
        elif matched == "array" and "items" in schema:
            value = [_conform(v, schema["items"], f"{where}[{i}]", tool) for i, v in enumerate(value)]
        elif matched == "object" and isinstance(schema.get("additionalProperties"), dict):
            sub = schema["additionalProperties"]
            value = {k: _conform(v, sub, f"{where}[{k!r}]", tool) for k, v in value.items()}
    allowed = schema.get("enum")
    if allowed is not None and not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
        raise InvalidArgumentError(
            f"Argument {where} of tool {tool!r} must be one of {', '.join(json.dumps(a) for a in allowed)}; "
            f"got {json.dumps(value)[:80]}."
        )
    return value


_PYTHON_TYPES: dict[str, type] = {"string": str, "boolean": bool, "array": list, "object": dict, "null": type(None)}


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        whole_float = isinstance(value, float) and value.is_integer()  # models often write 3.0 for 3
        return (isinstance(value, int) and not isinstance(value, bool)) or whole_float
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    python = _PYTHON_TYPES.get(kind)
    return python is not None and isinstance(value, python)


def _describe(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind is None:
        return "one of " + ", ".join(json.dumps(a) for a in schema["enum"]) if "enum" in schema else "any JSON value"
    kinds = [kind] if isinstance(kind, str) else kind
    return " or ".join(_LABELS.get(k, k) for k in kinds)
