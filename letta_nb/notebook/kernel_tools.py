"""Kernel tools: an agent that sees the notebook it lives in (opt-in per agent, ``%letta tools kernel on``).

The six tools are plain functions registered like any notebook function (``client.tools``), so they run in
the kernel process, in a tool thread of the runtime, against the IPython user namespace; never in the
sandbox, which could not see it. Each stored tool's source is a two-line wrapper that imports its body from
this module, so a kernel started later re-hydrates it from the store unchanged.

Invariants:
- **Read, don't touch.** ``list_variables``, ``describe_variable``, ``read_cell``, ``last_error`` and
  ``show_figure`` only read the namespace (they copy it before iterating: the user's thread may be running).
  ``run_python`` is the one tool that changes it, and runtime/approvals.py makes every call of a tool of that
  name wait for a person (:data:`~letta_nb.runtime.approvals.CODE_TOOLS`): a denied call never runs.
- **Small answers.** Results are capped (:data:`MAX_CHARS`) and say when they were cut; a figure is drawn at
  the largest resolution whose PNG fits a tool result.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from letta_nb.errors import InvalidArgumentError, OptionalDependencyError

__all__ = ["KERNEL_TOOLS", "KERNEL_TOOL_NAMES", "describe_variable", "disable", "enable", "last_error",
           "list_variables", "read_cell", "run_python", "show_figure"]

MAX_CHARS = 4000
MAX_VARIABLES = 60
_PNG_BUDGET = 18000  # base64 characters of a figure: under the executor's 20 000-character result limit


# -- the tools (their source is what the store keeps) ----------------------------------------------------


def list_variables() -> str:
    """List the user's notebook variables: name, type, shape and memory (modules, functions, _names skipped)."""
    from letta_nb.notebook.kernel_tools import _list_variables

    return _list_variables()


def describe_variable(name: str) -> str:
    """Describe a notebook variable: a DataFrame's dtypes, head and describe(), an array's shape, dtype and stats.

    Args:
        name: The variable's name, as listed by list_variables.
    """
    from letta_nb.notebook.kernel_tools import _describe_variable

    return _describe_variable(name)


def read_cell(n: int) -> str:
    """Read notebook cell In[n]: its source, its result Out[n] and its error, if any.

    Args:
        n: The cell's execution count (the number in In[n]).
    """
    from letta_nb.notebook.kernel_tools import _read_cell

    return _read_cell(n)


def last_error() -> str:
    """The last error raised in the notebook: the failing cell's source and the traceback."""
    from letta_nb.notebook.kernel_tools import _last_error

    return _last_error()


def run_python(code: str) -> str:
    """Run Python code in the user's notebook namespace (a person approves each call first).

    Args:
        code: The code; the value of a last expression is returned with what it printed.
    """
    from letta_nb.notebook.kernel_tools import _run_python

    return _run_python(code)


def show_figure() -> str:
    """Look at the current matplotlib figure: it is sent to you as an image."""
    from letta_nb.notebook.kernel_tools import _show_figure

    return _show_figure()


KERNEL_TOOLS: tuple[Callable[..., str], ...] = (list_variables, describe_variable, read_cell, last_error, run_python,
                                                show_figure)
KERNEL_TOOL_NAMES = tuple(f.__name__ for f in KERNEL_TOOLS)


def enable(client: Any, agent: Any) -> list[str]:
    """Register the kernel tools (again: the latest definitions) and attach them to ``agent``; its tools after."""
    attached = set(client.agents.tools.list(agent))
    for func in KERNEL_TOOLS:
        spec = client.tools.upsert_from_function(func, parallel_safe=func is not run_python, timeout=60.0)
        if spec.name not in attached:
            client.agents.tools.attach(agent, spec.name)
    return list(client.agents.tools.list(agent))


def disable(client: Any, agent: Any) -> list[str]:
    """Detach the kernel tools from ``agent`` (they stay registered for other agents); its tools after."""
    for name in KERNEL_TOOL_NAMES:
        if name in client.agents.tools.list(agent):
            client.agents.tools.detach(agent, name)
    return list(client.agents.tools.list(agent))


# -- their bodies -------------------------------------------------------------------------------------------


def _shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    shell: Any = InteractiveShell.instance() if InteractiveShell.initialized() else None  # IPython's get_ipython()
    if shell is None:
        raise InvalidArgumentError("the kernel tools need an IPython kernel (a notebook or IPython); none is running "
                                   "in this process.")
    return shell


def _user_variables(shell: Any) -> dict[str, Any]:
    import types

    hidden = getattr(shell, "user_ns_hidden", {})
    return {k: v for k, v in list(shell.user_ns.items())
            if not k.startswith("_") and k not in hidden and k not in ("In", "Out")
            and not isinstance(v, types.ModuleType) and not callable(v)}


def _cap(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[truncated: {len(text) - limit} more characters]"


def _shape(value: Any) -> list[int] | None:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        return list(shape)
    if isinstance(value, (list, tuple, dict, set, str, bytes)):
        return [len(value)]
    return None


def _memory(value: Any) -> int:
    usage = getattr(value, "memory_usage", None)
    if callable(usage) and _is_pandas(value):
        with contextlib.suppress(Exception):
            total = usage(deep=True)
            return int(total.sum() if hasattr(total, "sum") else total)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return sys.getsizeof(value)


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.startswith("pandas")


def _list_variables() -> str:
    variables = _user_variables(_shell())
    rows = [{"name": k, "type": type(v).__name__, "shape": _shape(v), "memory": _memory(v)}
            for k, v in list(variables.items())[:MAX_VARIABLES]]
    result: dict[str, Any] = {"variables": rows}
    if len(variables) > MAX_VARIABLES:
        result["truncated"] = f"{len(variables) - MAX_VARIABLES} more variables not listed"
    return _cap(json.dumps(result, default=str))


def _number(x: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities as None, numpy scalars as Python numbers."""
    if hasattr(x, "item"):
        with contextlib.suppress(Exception):
            x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if isinstance(x, (int, float, str, bool)) or x is None else str(x)


def _describe_variable(name: str) -> str:
    shell = _shell()
    variables = _user_variables(shell)
    if name not in shell.user_ns:
        close = difflib.get_close_matches(name, list(variables), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " list_variables shows the names."
        raise InvalidArgumentError(f"name: no variable {name!r} in the notebook.{hint}")
    value = shell.user_ns[name]
    info: dict[str, Any] = {"name": name, "type": type(value).__name__, "shape": _shape(value)}
    if _is_pandas(value) and hasattr(value, "describe") and hasattr(value, "head"):
        frame = value.to_frame() if getattr(value, "ndim", 2) == 1 else value
        info["rows"] = int(frame.shape[0])
        info["dtypes"] = {str(c): str(t) for c, t in frame.dtypes.items()}
        with contextlib.suppress(ValueError):  # a frame with no column describe() can summarise
            described = frame.describe()
            info["describe"] = {str(c): {str(s): _number(v) for s, v in described[c].items()}
                                for c in described.columns}
        info["head"] = frame.head(5).to_string(max_colwidth=40)
    elif type(value).__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
        import numpy as np

        info["dtype"] = str(value.dtype)
        if value.size and np.issubdtype(value.dtype, np.number):
            info["stats"] = {"min": _number(np.nanmin(value)), "max": _number(np.nanmax(value)),
                             "mean": _number(np.nanmean(value)), "std": _number(np.nanstd(value))}
        info["head"] = np.array2string(value, threshold=20, edgeitems=3)
    else:
        info["repr"] = _cap(repr(value), 1000)
    text = json.dumps(info, default=str)
    if len(text) > MAX_CHARS and "describe" in info:  # too many columns: keep the first ones
        keep = list(info["describe"])[:10]
        info["describe"] = {c: info["describe"][c] for c in keep}
        info["describe_truncated"] = "only the first 10 columns described"
        text = json.dumps(info, default=str)
    return _cap(text)


def _read_cell(n: int) -> str:
    from letta_nb.notebook._cells import cell_errors, cell_output, cell_source

    shell = _shell()
    source = cell_source(shell, n)
    if source is None:
        count = len(shell.user_ns.get("In") or [1]) - 1
        raise InvalidArgumentError(f"n: no cell In[{n}]; cells run so far are In[1] to In[{count}].")
    parts = [f"In[{n}]:\n{_cap(source, 2000)}"]
    has_out, out = cell_output(shell, n)
    if has_out:
        parts.append(f"Out[{n}]:\n{_cap(repr(out), 1000)}")
    error = cell_errors(shell).get(n)
    if error is not None:
        parts.append(f"Error:\n{_cap(error.traceback, 1500)}")
    return _cap("\n\n".join(parts))


def _last_error() -> str:
    from letta_nb.notebook._cells import last_error as recorded

    error = recorded(_shell())
    if error is None:
        return "No error has been raised in this notebook yet."
    return _cap(error.as_text())


def _run_python(code: str) -> str:
    shell = _shell()
    try:
        tree = ast.parse(code, "<run_python>")
    except SyntaxError as e:
        raise InvalidArgumentError(f"code: not valid Python: {e.msg} (line {e.lineno}).") from None
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    assert last is None or isinstance(last, ast.Expr)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(tree, "<run_python>", "exec"), shell.user_ns)  # noqa: S102 - approved by a person
        value = eval(compile(ast.Expression(last.value), "<run_python>", "eval"),  # noqa: S307
                     shell.user_ns) if last is not None else None
    out = printed.getvalue()
    text = (out + ("\n" if out and not out.endswith("\n") else "")) + (repr(value) if last is not None else "")
    return _cap(text or "(ran; no output)")


def _show_figure() -> str:
    from letta_nb.llm.images import image_marker

    try:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure
    except ImportError:
        raise OptionalDependencyError("show_figure needs matplotlib: pip install 'letta-nb[notebook]'.") from None
    from letta_nb.notebook._cells import last_figure

    shell = _shell()
    # Jupyter's inline backend closes figures after each cell: the last one a cell drew, else one in a variable
    figure = plt.gcf() if plt.get_fignums() else last_figure(shell)
    if figure is None:
        shown = [v if isinstance(v, Figure) else v.figure for v in _user_variables(shell).values()
                 if isinstance(v, Figure) or isinstance(getattr(v, "figure", None), Figure)]
        figure = shown[-1] if shown else None
    if figure is None:
        raise InvalidArgumentError("no matplotlib figure to show: draw one first (plt.plot(...) in a cell, or keep "
                                   "it in a variable: fig, ax = plt.subplots()).")
    for dpi in (72, 50, 36, 24):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        marker = image_marker(buffer.getvalue())
        if len(marker) <= _PNG_BUDGET:
            width, height = (round(x * dpi) for x in figure.get_size_inches())
            return f"The current figure ({width}x{height} px PNG) is attached as an image.\n{marker}"
    raise InvalidArgumentError("the figure is too detailed to send as a small image; simplify it or make it smaller "
                               "(figsize=(4, 3)).")
