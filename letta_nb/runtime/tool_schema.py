"""Turning plain Python functions into tools a model can call (checking its calls: tool_args.py).

Users give agents ordinary functions; the model only ever sees a JSON schema, so the schema must be
derived from what the function already says about itself (signature and docstring) rather than from
a second, hand-written description that drifts. Everything here is pure: no I/O, no event loop, so
the executor, the store (which persists ``source`` and re-hydrates with :func:`function_from_source`)
and the notebook layer all share one definition of what a tool is.

Invariants: a :class:`ToolSpec` only exists for functions whose every model-visible parameter has a
JSON-representable annotation (anything else is a :class:`ToolSchemaError` at definition time, never
a surprise at call time); parameters the runtime injects (:data:`INJECTED_PARAMS`) never appear in a
schema, so a model cannot supply them; and a sandboxed spec always carries source the sandbox can exec.
"""

from __future__ import annotations
import __future__

import ast
import enum
import hashlib
import inspect
import json
import linecache
import re
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from letta_nb.errors import InvalidArgumentError, ToolSchemaError

__all__ = [
    "INJECTED_PARAMS",
    "ToolSpec",
    "tool_from_function",
    "function_from_source",
]

INJECTED_PARAMS = frozenset({"agent_state"})
"""Parameters the runtime passes itself; they are excluded from schemas and rejected if a model sends them."""

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")
_SUPPORTED = (
    "str, int, float, bool, list / list[X], dict / dict[str, X], Optional[X] / X | None, "
    "Literal[...], an enum.Enum subclass, typing.Any"
)
_PRIMITIVES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
# Annotations stay unevaluated when source is exec'd, so `Optional`, enums etc. imported by the original
# module need not exist in the fresh namespace (or in the sandbox process).
_COMPILE_FLAGS = __future__.annotations.compiler_flag


@dataclass(frozen=True)
class ToolSpec:
    """A callable tool: what the model sees (name, description, parameters) and how to run it."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any] | None
    source: str | None
    parallel_safe: bool = False
    sandbox: bool | Literal["strict"] = False  # "strict": refuse to run where isolation is unavailable
    timeout: float | None = 30.0
    return_char_limit: int = 20000
    network: bool = False  # a sandboxed tool reaches the network only if this is True
    requires_approval: bool = False  # each call waits for a person's yes or no (runtime/approvals.py)

    def __post_init__(self) -> None:
        _check_isolation(self.name, self.sandbox, self.network)
        # Derived from the function once; kept off the dataclass fields so equality and replace() ignore them.
        object.__setattr__(self, "_injected", _injected_names(self.func, self.source, self.name))
        object.__setattr__(self, "_enums", _enum_params(self.func))

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI chat-completions function-tool entry for this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    @property
    def injected(self) -> frozenset[str]:
        """Which of :data:`INJECTED_PARAMS` the function accepts (the runtime passes only those)."""
        injected: frozenset[str] = self.__dict__["_injected"]  # set by __post_init__, off the dataclass fields
        return injected


def tool_from_function(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parallel_safe: bool = False,
    sandbox: bool | Literal["strict"] = False,
    timeout: float | None = 30.0,
    return_char_limit: int = 20000,
    network: bool = False,
) -> ToolSpec:
    """Build a :class:`ToolSpec` from a function's signature and (Google, numpy or reST) docstring.

    ``sandbox=True`` runs the tool in ``letta_nb.runtime.sandbox`` (isolated where the machine allows it,
    else a separate process); ``"strict"`` runs it only where it is isolated; ``network=True`` lets a
    sandboxed tool use the network.
    """
    if not callable(func):
        raise ToolSchemaError(f"A tool must be a function, got {type(func).__name__}: {func!r}.")
    func_name = getattr(func, "__name__", None)
    name = (func_name or "") if name is None else name
    if not _NAME.fullmatch(name):  # match() lets "f\n" through: $ matches before a trailing newline
        hint = " Lambdas have no usable name: define the tool with `def`." if func_name == "<lambda>" else ""
        raise ToolSchemaError(
            f"Tool name {name!r} is invalid: it must match {_NAME.pattern} (letters, digits and underscores, "
            f"not starting with a digit, at most 64 characters). Pass name='...' or rename the function.{hint}"
        )
    if timeout is not None and timeout <= 0:
        raise InvalidArgumentError(f"timeout of tool {name!r} must be positive seconds or None, got {timeout!r}.")
    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, SyntaxError, TypeError, ValueError) as e:
        raise ToolSchemaError(
            f"Cannot read the signature of tool {name!r}: {type(e).__name__}: {e}. "
            f"Make every name used in its annotations importable from the function's module."
        ) from None
    summary, param_docs = _parse_docstring(inspect.getdoc(func))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.name in INJECTED_PARAMS:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            kinds: dict[inspect._ParameterKind, str] = {param.VAR_POSITIONAL: f"*{param.name}",
                                                        param.VAR_KEYWORD: f"**{param.name}"}
            kind = kinds.get(param.kind, f"positional-only {param.name}")
            raise ToolSchemaError(
                f"Tool {name!r} cannot take {kind}: models pass arguments as a JSON object of named values. "
                f"Declare each argument as a named, annotated parameter (use a list or dict parameter for collections)."
            )
        properties[param.name] = _param_schema(name, param, param_docs.get(param.name))
        if param.default is param.empty:
            required.append(param.name)
    source = _function_source(func)
    if source is not None and func_name and name != func_name:
        source += f"\n{name} = {func_name}\n"  # so function_from_source(source, name) finds it
    _check_isolation(name, sandbox, network)
    if network and not sandbox:
        raise InvalidArgumentError(
            f"network=True of tool {name!r} only applies to sandboxed tools (an in-process tool already has the "
            f"kernel's network). Pass sandbox=True (or 'strict') as well, or drop network=True.")
    if sandbox:
        _check_sandboxable(func, name, source)
    parameters = {"type": "object", "properties": properties, "required": required}
    return ToolSpec(name=name, description=summary if description is None else description, parameters=parameters,
                    func=func, source=source, parallel_safe=parallel_safe, sandbox=sandbox, timeout=timeout,
                    return_char_limit=return_char_limit, network=network)


def function_from_source(source: str, name: str) -> Callable[..., Any]:
    """Exec ``source`` in a fresh namespace and return the function called ``name`` (re-hydrating a stored tool)."""
    # One name per distinct text: re-defining a tool must not rewrite the lines an older version's traceback shows.
    filename = f"<letta_nb tool {name} {hashlib.sha1(source.encode()).hexdigest()[:10]}>"
    try:
        code = compile(source, filename, "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
    except SyntaxError as e:
        raise ToolSchemaError(f"Source of tool {name!r} does not compile: {e.msg} (line {e.lineno}).") from None
    # Registering the text lets tracebacks and inspect.getsource() see it, so a re-hydrated tool round-trips.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": f"letta_nb_tool_{name}"}
    try:
        exec(code, namespace)
    except Exception as e:
        raise ToolSchemaError(f"Running the source of tool {name!r} failed: {type(e).__name__}: {e}.") from None
    func: object = namespace.get(name)
    if not callable(func):
        defined = [k for k, v in namespace.items() if inspect.isfunction(v)]
        raise ToolSchemaError(
            f"The source of tool {name!r} does not define a function named {name!r}"
            + (f" (it defines {', '.join(map(repr, defined))})." if defined else ".")
            + " Store the complete `def` of the function under the tool's name."
        )
    return func


# --- schema from annotations ---------------------------------------------------------------------------


class _Unsupported(Exception):
    pass


def _param_schema(tool: str, param: inspect.Parameter, doc: str | None) -> dict[str, Any]:
    if param.annotation is param.empty:
        raise ToolSchemaError(
            f"Parameter {param.name!r} of tool {tool!r} has no type annotation, so its JSON type is unknown. "
            f"Annotate it with one of: {_SUPPORTED} (e.g. `{param.name}: str`)."
        )
    try:
        schema = _schema_for(param.annotation)
    except _Unsupported:
        raise ToolSchemaError(
            f"Parameter {param.name!r} of tool {tool!r} is annotated {_type_name(param.annotation)}, which has no "
            f"JSON-schema equivalent. Supported: {_SUPPORTED}. Fix: annotate {param.name!r} with a supported type "
            f"(e.g. list[...] instead of set/tuple, str for bytes or custom objects) and convert inside the function."
        ) from None
    if doc:
        schema["description"] = doc
    if param.default is not param.empty:
        default = param.default.value if isinstance(param.default, enum.Enum) else param.default
        try:
            json.dumps(default)
            schema["default"] = default
        except (TypeError, ValueError):
            pass
    return schema


def _schema_for(tp: Any) -> dict[str, Any]:
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([member.value for member in tp])
    if isinstance(tp, type) and tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    origin, args = get_origin(tp), get_args(tp)
    if tp is list or origin is list:
        return {"type": "array", **({"items": _schema_for(args[0])} if args else {})}
    if tp is dict or origin is dict:
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise _Unsupported  # JSON object keys are always strings
        values = _schema_for(args[1])
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    if origin is Literal:
        return _enum_schema(list(args))
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _nullable(_schema_for(rest[0]))
    raise _Unsupported


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    kinds = {_json_type(v) for v in values}
    if "?" in kinds:
        raise _Unsupported
    return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    kind = schema.get("type")
    if kind is not None:
        schema["type"] = [kind, "null"] if isinstance(kind, str) else [*kind, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number"}.get(type(value), "?")


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) and not get_args(tp) else repr(tp).replace("typing.", "")


def _enum_params(func: Callable[..., Any] | None) -> dict[str, type[enum.Enum]]:
    """Parameters annotated with an Enum (or Optional[Enum]); the model sends values, the function wants members."""
    try:
        params = inspect.signature(func, eval_str=True).parameters.values() if func is not None else ()
    except Exception:  # re-hydrated source may name types that no longer resolve; pass plain values then
        return {}
    found = {}
    for p in params:
        optional = get_origin(p.annotation) in (Union, types.UnionType)
        for tp in get_args(p.annotation) if optional else (p.annotation,):
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                found[p.name] = tp
    return found


# --- argument checking ---------------------------------------------------------------------------------


# --- docstrings and source -----------------------------------------------------------------------------

_GOOGLE = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):$")
_GOOGLE_ANY = re.compile(r"^[A-Z][A-Za-z ]*:$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_NUMPY = {"Parameters", "Other Parameters", "Keyword Arguments"}
_NUMPY_ENTRY = re.compile(r"^\*{0,2}(\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")
_RULE = re.compile(r"^-{3,}$")
_REST_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Summary (first paragraph) and per-parameter descriptions from a Google, numpy or reST docstring."""
    lines = (doc or "").splitlines()

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    def starts_section(i: int) -> bool:
        s = lines[i].strip()
        return bool(_GOOGLE_ANY.match(s) or s.startswith(":")
                    or (i + 1 < len(lines) and _RULE.match(lines[i + 1].strip())))

    summary: list[str] = []
    for i, line in enumerate(lines):
        if (not line.strip() and summary) or starts_section(i):
            break
        if line.strip():
            summary.append(line.strip())
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    mode, base, entry_indent, i = None, 0, 0, 0
    while i < len(lines):
        line, s = lines[i], lines[i].strip()
        if not s:
            i += 1
            continue
        if _GOOGLE.match(s):
            mode, base, current = "google", indent(line), None
        elif s in _NUMPY and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            mode, base, current = "numpy", indent(line), None
            i += 1
        elif match := _REST_PARAM.match(s):
            mode, base, current = "rest", indent(line), params.setdefault(match.group(1), [])
            current.append(match.group(2).strip())
        elif mode == "google" and indent(line) > base:
            if current is None or (indent(line) <= entry_indent and _GOOGLE_ENTRY.match(s)):
                entry_indent = indent(line)
                match = _GOOGLE_ENTRY.match(s)
                if match:
                    current = params.setdefault(match.group(1), [])
                    current.append(match.group(2).strip())
                else:
                    current = None
            else:
                current.append(s)
        elif mode == "numpy" and indent(line) == base and not starts_section(i) and (entry := _NUMPY_ENTRY.match(s)):
            names = [n.strip().lstrip("*") for n in entry.group(1).split(",")]
            current = []
            for n in names:
                params[n] = current
        elif mode in ("numpy", "rest") and indent(line) > base and current is not None:
            current.append(s)
        else:
            mode, current = None, None
        i += 1
    return " ".join(summary), {k: " ".join(w for w in v if w) for k, v in params.items() if any(v)}


def _function_source(func: Callable[..., Any]) -> str | None:
    """The function's own ``def`` (decorators dropped so the sandbox can exec it), or None if unavailable."""
    try:
        text = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(text)
    except (OSError, TypeError, SyntaxError):
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None  # e.g. a lambda: getsource returns the enclosing statement
    return "".join(text.splitlines(keepends=True)[tree.body[0].lineno - 1:])


def _check_isolation(name: str, sandbox: object, network: object) -> None:
    if not (sandbox is True or sandbox is False or sandbox == "strict"):
        raise InvalidArgumentError(
            f"sandbox of tool {name!r} must be False (run in the kernel), True (a sandbox, isolated where this "
            f"machine allows) or 'strict' (isolated or refused), got {sandbox!r}.")
    if not isinstance(network, bool):
        raise InvalidArgumentError(f"network of tool {name!r} must be True or False, got {network!r}.")


def _check_sandboxable(func: Callable[..., Any], name: str, source: str | None) -> None:
    how = "Define it with `def` in a .py file or a notebook cell, importing what it needs inside its body."
    if getattr(func, "__name__", None) == "<lambda>":
        raise ToolSchemaError(f"Tool {name!r} is a lambda, which cannot be sandboxed: the sandbox re-creates the "
                              f"function from its source in another process. {how}")
    if source is None:
        raise ToolSchemaError(f"Tool {name!r} has sandbox=True, but its source code is unavailable, and the sandbox "
                              f"runs the function from source in a separate process. {how}")
    free = getattr(getattr(func, "__code__", None), "co_freevars", ())
    if free:
        raise ToolSchemaError(f"Tool {name!r} uses variables of an enclosing function ({', '.join(free)}), which do "
                              f"not exist in the sandbox process. {how}")
    if INJECTED_PARAMS & set(inspect.signature(func).parameters):
        raise ToolSchemaError(f"Tool {name!r} takes {', '.join(sorted(INJECTED_PARAMS))}, which lives in the runtime "
                              f"process and cannot be passed to the sandbox. Use sandbox=False for this tool.")


def _injected_names(func: Callable[..., Any] | None, source: str | None, name: str) -> frozenset[str]:
    if func is not None:
        try:
            return INJECTED_PARAMS & frozenset(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            return frozenset()
    try:
        tree = ast.parse(source or "")
    except SyntaxError:
        return frozenset()
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    node = next((n for n in defs if n.name == name), defs[0] if defs else None)
    args = node.args if node else None
    names = {a.arg for a in (args.posonlyargs + args.args + args.kwonlyargs)} if args else set()
    return INJECTED_PARAMS & frozenset(names)
