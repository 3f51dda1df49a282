"""What the kernel ran: each cell's source, output and error, for the kernel tools, ``{In[n]}``/``{Out[n]}``/
``{Err[n]}`` in ``%%letta`` and ``%letta fix``.

IPython keeps sources (``In``) and results (``Out``) but only the *last* exception (``sys.last_value``). A
``post_run_cell`` hook, installed by ``%load_ext letta_nb`` and removed by ``%unload_ext``, keeps the error of
every failing cell as text (its traceback, IPython's own frames dropped), so an agent can be shown the error
of cell 12 after cells 13 and 14 ran; a ``post_execute`` hook keeps the newest matplotlib figure, which
Jupyter's inline backend closes after each cell. Only text is kept (never the exception, whose frames would pin every
local of the failing code), at most :data:`MAX_ERRORS` cells, each cut to :data:`MAX_TRACEBACK` characters.
The hook only reads and records: it never changes the user's namespace.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["CellError", "cell_errors", "cell_output", "cell_source", "install", "last_error", "last_figure",
           "uninstall"]

MAX_ERRORS = 200
MAX_TRACEBACK = 6000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CellError:
    """The error of one cell: its number, source and traceback text."""

    cell: int | None
    source: str
    error: str  # "TypeError: ..." (the last line of the traceback)
    traceback: str

    def as_text(self) -> str:
        where = f"In[{self.cell}]" if self.cell is not None else "the last cell"
        return f"{where}:\n{self.source.rstrip()}\n\n{self.traceback.rstrip()}"


class _Log:
    def __init__(self) -> None:
        self.errors: dict[int, CellError] = {}
        self.last: CellError | None = None
        self.figure: Any = None  # the last matplotlib figure a cell left open

    def on_post_execute(self) -> None:
        # Jupyter's inline backend closes a cell's figures after showing them (its own post_execute hook,
        # registered when pyplot is first imported, so after this one): keep the newest for show_figure.
        pyplot = sys.modules.get("matplotlib.pyplot")  # never imports matplotlib
        if pyplot is not None and pyplot.get_fignums():
            self.figure = pyplot.gcf()

    def on_post_run_cell(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is None:
            return
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", None) or ""
        record = CellError(result.execution_count, source, _last_line(error), _format(error))
        self.last = record
        if result.execution_count is not None:
            self.errors[result.execution_count] = record
            while len(self.errors) > MAX_ERRORS:
                del self.errors[next(iter(self.errors))]


_logs: weakref.WeakKeyDictionary[Any, _Log] = weakref.WeakKeyDictionary()


def install(shell: Any) -> None:
    """Record the errors of the cells ``shell`` runs from now on (idempotent)."""
    if shell in _logs:
        return
    log = _logs[shell] = _Log()
    shell.events.register("post_run_cell", log.on_post_run_cell)
    shell.events.register("post_execute", log.on_post_execute)


def uninstall(shell: Any) -> None:
    log = _logs.pop(shell, None)
    if log is not None:
        with contextlib.suppress(ValueError):  # already gone (a shell reset)
            shell.events.unregister("post_run_cell", log.on_post_run_cell)
        with contextlib.suppress(ValueError):
            shell.events.unregister("post_execute", log.on_post_execute)


def cell_errors(shell: Any) -> dict[int, CellError]:
    """Errors by cell number (empty when the hook is not installed)."""
    log = _logs.get(shell)
    return dict(log.errors) if log is not None else {}


def last_error(shell: Any) -> CellError | None:
    """The last error: the hook's record, else IPython's ``sys.last_value`` (the failing cell unknown)."""
    log = _logs.get(shell)
    if log is not None and log.last is not None:
        return log.last
    value = getattr(sys, "last_value", None)
    if value is None:
        return None
    return CellError(None, "", _last_line(value), _format(value))


def last_figure(shell: Any) -> Any:
    """The newest matplotlib figure a cell left open (None if none did since the hook was installed)."""
    log = _logs.get(shell)
    return log.figure if log is not None else None


def cell_source(shell: Any, n: int) -> str | None:
    """The source of cell ``n`` (``In[n]``), None if there is no such cell."""
    history = shell.user_ns.get("In")
    if not isinstance(history, list) or not 0 < n < len(history):
        return None
    return str(history[n])


def cell_output(shell: Any, n: int) -> tuple[bool, Any]:
    """``(True, Out[n])`` when cell ``n`` had a result, else ``(False, None)``."""
    out = shell.user_ns.get("Out")
    if isinstance(out, dict) and n in out:
        return True, out[n]
    return False, None


def _last_line(error: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]


def _format(error: BaseException) -> str:
    tb = error.__traceback__
    # IPython's run_code frame comes first: the user's code starts after it.
    while tb is not None and "IPython" in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    text = _ANSI.sub("", "".join(traceback.format_exception(type(error), error, tb)))
    if len(text) > MAX_TRACEBACK:  # keep the end: the failing line and the error are there
        text = f"[traceback truncated: first {len(text) - MAX_TRACEBACK} characters dropped]\n" + text[-MAX_TRACEBACK:]
    return text
