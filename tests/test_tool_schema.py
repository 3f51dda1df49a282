"""Tool schemas come from signatures and docstrings; anything a model could not call is rejected up front."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any, Dict, List, Literal, Optional

import pytest

from letta_nb.errors import InvalidArgumentError, ToolSchemaError
from letta_nb.runtime.tool_args import validate_arguments
from letta_nb.runtime.tool_schema import (
    INJECTED_PARAMS,
    ToolSpec,
    function_from_source,
    tool_from_function,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def google_style(query: str, limit: int = 5) -> str:
    """Search the archive for passages.

    Only the first paragraph is the summary.

    Args:
        query: What to look for,
            in plain words.
        limit (int): How many results.

    Returns:
        str: The passages.
    """
    return query * limit


def numpy_style(a: int, b: float) -> float:
    """Add two numbers.

    Parameters
    ----------
    a : int
        The first
        number.
    b : float
        The second number.

    Returns
    -------
    float
        The sum.
    """
    return a + b


def rest_style(a: int, b: float) -> float:
    """Multiply two
    numbers.

    :param a: The first
        factor.
    :param float b: The second factor.
    :type a: int
    :returns: The product.
    """
    return a * b


def typed(
    name: str,
    mode: Literal["fast", "slow"],
    color: Color,
    rows: list[dict[str, int]],
    legacy: List[int],
    table: Dict[str, float],
    anything: Any,
    note: Optional[str] = None,
    maybe: int | None = None,
    flag: bool = False,
    agent_state: object = None,
) -> str:
    """Exercise every supported annotation."""
    return f"{name} {mode} {color} {rows}"


def test_google_docstring() -> None:
    spec = tool_from_function(google_style)
    assert spec.description == "Search the archive for passages."
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for, in plain words."},
            "limit": {"type": "integer", "description": "How many results.", "default": 5},
        },
        "required": ["query"],
    }
    assert spec.openai_schema() == {
        "type": "function",
        "function": {"name": "google_style", "description": spec.description, "parameters": spec.parameters},
    }


def test_numpy_docstring() -> None:
    spec = tool_from_function(numpy_style)
    assert spec.description == "Add two numbers."
    assert spec.parameters["properties"] == {
        "a": {"type": "integer", "description": "The first number."},
        "b": {"type": "number", "description": "The second number."},
    }
    assert spec.parameters["required"] == ["a", "b"]


def test_rest_docstring() -> None:
    spec = tool_from_function(rest_style)
    assert spec.description == "Multiply two numbers."
    assert spec.parameters["properties"]["a"]["description"] == "The first factor."
    assert spec.parameters["properties"]["b"]["description"] == "The second factor."


def test_supported_annotations() -> None:
    spec = tool_from_function(typed)
    props = spec.parameters["properties"]
    assert props["name"] == {"type": "string"}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["color"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["rows"] == {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "integer"}}}
    assert props["legacy"] == {"type": "array", "items": {"type": "integer"}}
    assert props["table"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["anything"] == {}
    assert props["note"] == {"type": ["string", "null"], "default": None}
    assert props["maybe"] == {"type": ["integer", "null"], "default": None}
    assert props["flag"] == {"type": "boolean", "default": False}
    assert spec.parameters["required"] == ["name", "mode", "color", "rows", "legacy", "table", "anything"]
    json.dumps(spec.openai_schema())  # the whole schema is JSON


def test_optional_without_default_is_required_but_nullable() -> None:
    def f(x: Optional[int]) -> None:
        """F."""

    spec = tool_from_function(f)
    assert spec.parameters["required"] == ["x"]
    assert validate_arguments(spec, {"x": None}) == {"x": None}


def test_enum_default_is_its_value_and_unserializable_defaults_are_omitted() -> None:
    sentinel = object()

    def f(color: Color = Color.BLUE, extra: Any = sentinel) -> None:
        """F."""

    props = tool_from_function(f).parameters["properties"]
    assert props["color"]["default"] == "blue"
    assert "default" not in props["extra"]


def test_injected_agent_state_is_excluded_from_schema() -> None:
    spec = tool_from_function(typed)
    assert "agent_state" in INJECTED_PARAMS
    assert "agent_state" not in spec.parameters["properties"]
    assert spec.injected == frozenset({"agent_state"})
    assert tool_from_function(google_style).injected == frozenset()


def test_name_and_description_overrides() -> None:
    spec = tool_from_function(google_style, name="search", description="Find things.", parallel_safe=True, timeout=None)
    assert (spec.name, spec.description, spec.parallel_safe, spec.timeout) == ("search", "Find things.", True, None)
    assert function_from_source(spec.source, "search")("ab", 2) == "abab"


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [(set, "set"), (bytes, "bytes"), (Callable, "Callable"), (tuple[int, int], "tuple[int, int]"),
     (dict[int, str], "dict[int, str]"), (Optional[set], "Optional[set]"), (ToolSpec, "ToolSpec")],
)
def test_unsupported_annotation_names_function_parameter_and_fix(annotation: Any, shown: str) -> None:
    def f(x):  # type: ignore[no-untyped-def]
        """F."""

    f.__annotations__ = {"x": annotation}
    with pytest.raises(ToolSchemaError) as info:
        tool_from_function(f)
    message = str(info.value)
    assert "'f'" in message and "'x'" in message and shown in message
    assert "Supported: str, int, float, bool" in message and "Fix:" in message


def test_missing_annotation() -> None:
    def f(x, y: int):  # type: ignore[no-untyped-def]
        """F."""

    with pytest.raises(ToolSchemaError, match=r"Parameter 'x' of tool 'f' has no type annotation.*x: str"):
        tool_from_function(f)


@pytest.mark.parametrize("signature", ["*args: int", "**kwargs: int", "a: int, /"])
def test_variadic_and_positional_only_parameters_are_rejected(signature: str) -> None:
    f = function_from_source(f"def f({signature}):\n    pass\n", "f")
    with pytest.raises(ToolSchemaError, match="named, annotated parameter"):
        tool_from_function(f)


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "a" * 65, "über"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ToolSchemaError, match="Tool name .* is invalid"):
        tool_from_function(google_style, name=name)


def test_lambda_is_rejected_for_the_sandbox() -> None:
    with pytest.raises(ToolSchemaError, match="lambda"):
        tool_from_function(lambda: 1, sandbox=True)
    with pytest.raises(ToolSchemaError, match="lambda, which cannot be sandboxed"):
        tool_from_function(lambda: 1, name="one", sandbox=True)


def test_sandbox_needs_source_and_no_closure() -> None:
    rehydrated_without_file = function_from_source("def f(x: int) -> int:\n    return x\n", "f")
    assert tool_from_function(rehydrated_without_file, sandbox=True).source is not None  # linecache keeps it

    exec_only: dict[str, Any] = {}
    exec(compile("def g(x: int) -> int:\n    return x\n", "<nowhere>", "exec"), exec_only)
    assert tool_from_function(exec_only["g"]).source is None
    with pytest.raises(ToolSchemaError, match="source code is unavailable.*notebook cell"):
        tool_from_function(exec_only["g"], sandbox=True)

    factor = 3

    def scaled(x: int) -> int:
        return x * factor

    with pytest.raises(ToolSchemaError, match="enclosing function .*factor"):
        tool_from_function(scaled, sandbox=True)


def test_source_drops_decorators_and_round_trips() -> None:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    @decorate
    def shout(text: str, times: int = 1) -> str:
        """Shout the text."""
        return text.upper() * times

    spec = tool_from_function(shout)
    assert spec.source is not None and spec.source.startswith("def shout(")
    again = function_from_source(spec.source, "shout")
    assert again("hi", times=2) == "HIHI"
    assert tool_from_function(again).parameters == spec.parameters


def test_function_from_source_resolves_annotations_lazily() -> None:
    # The original module imported Optional/Color; the stored source is exec'd without them.
    func = function_from_source("def f(x: Optional[Color] = None) -> str:\n    return repr(x)\n", "f")
    assert func() == "None"


def test_function_from_source_errors_are_clear() -> None:
    with pytest.raises(ToolSchemaError, match=r"does not define a function named 'g' \(it defines 'f'\)"):
        function_from_source("def f():\n    pass\n", "g")
    with pytest.raises(ToolSchemaError, match="does not compile"):
        function_from_source("def f(:\n", "f")


def test_validate_arguments() -> None:
    spec = tool_from_function(typed)
    good = {"name": "n", "mode": "fast", "color": "blue", "rows": [{"a": 1}], "legacy": [1.0],
            "table": {"x": 1}, "anything": [None]}
    checked = validate_arguments(spec, good)
    assert checked["color"] is Color.BLUE and checked["legacy"] == [1]
    bad_cases = [
        ({**good, "name": 3}, "'name' of tool 'typed' must be a string, got an integer"),
        ({**good, "flag": 1}, "'flag' of tool 'typed' must be a boolean"),
        ({**good, "legacy": [True]}, r"'legacy'\[0\] of tool 'typed' must be an integer, got a boolean"),
        ({**good, "rows": [{"a": "1"}]}, r"'rows'\[0\]\['a'\] of tool 'typed' must be an integer"),
        ({**good, "mode": "medium"}, "'mode' of tool 'typed' must be one of \"fast\", \"slow\""),
        ({**good, "nmae": "x"}, "Unexpected argument 'nmae'.* Did you mean 'name'"),
        ({**good, "agent_state": {}}, "Unexpected argument 'agent_state'"),
        ({k: v for k, v in good.items() if k != "rows"}, "Missing required argument.*'rows' \\(an array\\)"),
    ]
    for arguments, pattern in bad_cases:
        with pytest.raises(InvalidArgumentError, match=pattern):
            validate_arguments(spec, arguments)
