"""The ``%letta`` and ``%%letta`` magics.

Two ``Magics`` classes, one per topic: :class:`LettaCommandMagics` owns the ``%letta SUBCOMMAND`` line
magic (a thin dispatcher over the subcommand modules ``_cmd_*``) and :class:`LettaChatMagics` owns the
``%%letta`` cell magic that sends the cell to an agent and streams the reply. Both read the kernel's
:class:`~letta_nb.notebook._session.NotebookSession`; neither keeps state of its own, so ``%reload_ext``
can replace them freely.

Invariants of ``%%letta``: the stream is consumed in the cell's thread, so a kernel interrupt (Ctrl-C)
lands in it; the stream is always closed (which cancels the turn if it is still running), and what the
agent had said by then stays on screen and in recall memory. Lines and cells are made valid Unicode on
the way in (:mod:`letta_nb._text`), so no message, error or display carries a lone surrogate the kernel
could not send.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from letta_nb._text import clean_text
from letta_nb.errors import LettaNBError
from letta_nb.llm.base import ToolCall
from letta_nb.notebook import (  # noqa: F401  (subcommands)
    _cmd_agents,
    _cmd_info,
    _cmd_kernel,
    _cmd_memory,
    _cmd_serve,  # noqa: F401  (%letta serve)
    _cmd_tools,
)
from letta_nb.notebook._cells import cell_errors
from letta_nb.notebook._commands import dispatch, help_text, parse
from letta_nb.notebook._live_reply import FORMATS, LiveReply
from letta_nb.notebook._session import current_session

__all__ = ["LettaChatMagics", "LettaCommandMagics", "interpolate"]

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_CELL = re.compile(r"^(In|Out|Err)\[\s*(\d+)\s*\]$")  # {In[3]}: a cell's source, result or error


def _plain_help(doc: str | None) -> str:
    """IPython's ``magic_arguments`` writes each usage as a reST literal block (``::`` then the indented
    usage); ``%letta?`` shows the docstring as plain text, where the marker is noise."""
    return re.sub(r"^::\n\n", "", doc or "", flags=re.M)


@magics_class
class LettaCommandMagics(Magics):
    @line_magic
    def letta(self, line: str) -> Any:
        return dispatch(clean_text(line), current_session(), self.shell)

    letta.__doc__ = _plain_help(help_text())


@magics_class
class LettaChatMagics(Magics):
    @magic_arguments("%letta")
    @argument("agent", nargs="?", help="agent name (default: the current agent, see %%letta use)")
    @argument("-o", "--output", metavar="VAR", help="store the Response in this notebook variable")
    @argument("--format", choices=FORMATS, default="md",
              help="md (rendered markdown, default), text (plain) or json (the reply as JSON)")
    @argument("--reasoning", action="store_true",
              help="also show the model's reasoning (hidden by default; the reply always shows)")
    @cell_magic
    def letta(self, line: str, cell: str) -> None:
        """Send the cell to an agent and stream its reply into the output area.

        ``{name}`` or ``{obj.attr}`` in the cell is replaced by that notebook variable, ``{In[n]}``, ``{Out[n]}``
        and ``{Err[n]}`` by cell n's source, result and error (``{{`` and ``}}`` are literal braces). Tool calls
        show as compact lines above the reply, the model's reasoning too with ``--reasoning``. Interrupt the
        kernel (Ctrl-C, or the stop button) to stop: the partial answer is
        kept, on screen and in recall memory.
        """
        assert self.shell is not None  # IPython runs a magic in the shell that registered it
        args = parse(self.letta, clean_text(line))
        if args.output is not None and not _IDENT.match(args.output):
            raise UsageError(f"-o needs a Python variable name, got {args.output!r}.")
        text = clean_text(interpolate(cell, self.shell.user_ns, cell_errors(self.shell))).strip()
        if not text:
            raise UsageError("%%letta needs a message in the cell body, e.g.\n%%letta sam\nWhat did we discuss?")
        session = current_session()
        try:
            agent = session.client.agents.retrieve(session.agent_or_current(args.agent))
            live, response = _stream_reply(session.client, agent, text, args.format, args.reasoning)
        except LettaNBError as e:
            raise UsageError(str(e)) from None
        if args.output:
            self.shell.user_ns[args.output] = response
        if live.error:
            raise UsageError(f"agent {agent.name!r} failed: {live.error}")


LettaChatMagics.letta.__doc__ = _plain_help(LettaChatMagics.letta.__doc__)


def _stream_reply(client: Any, agent: Any, text: str, fmt: str, reasoning: bool = False) -> tuple[LiveReply, Any]:
    live = LiveReply(agent.name, fmt, reasoning)
    before = agent.last_seq  # read now: the AgentState is the live session's and moves with the turn
    handle = display(live.bundle(), raw=True, display_id=True)
    steps: list[Any] = []
    usage = None
    with contextlib.closing(client.agents.messages.stream(agent.id, text)) as stream:
        try:
            for event in stream:
                live.feed(event)
                if event.message_type == "step":
                    steps.append(event.step)
                elif event.message_type == "stop_reason":
                    usage = event.usage
                if live.due():
                    handle.update(live.bundle(), raw=True)
            if live.status == "streaming":
                live.status = "done"
        except KeyboardInterrupt:
            live.status = "cancelled"
        except LettaNBError as e:
            live.status, live.error = "error", str(e)
    response = _response(client, agent, before, steps, usage, live)
    handle.update(live.bundle(response), raw=True)
    if live.status == "requires_approval" and live.approvals:  # Approve / Deny under the reply
        calls = [ToolCall(e.call_id, e.name, e.arguments) for e in live.approvals]
        response.pending_approvals = calls
        with contextlib.suppress(ImportError):  # no ipywidgets: the reply's last lines say what to type
            from letta_nb.notebook._approval_view import ApprovalBox

            display(ApprovalBox(client, agent.name, calls))
    return live, response


def _response(client: Any, agent: Any, before: int, steps: list[Any], usage: Any, live: LiveReply) -> Any:
    """The turn as a Response: its messages are those recall memory gained since the turn began."""
    from letta_nb.llm.base import Usage
    from letta_nb.schemas import Response

    recent = client.agents.messages.list(agent.id, limit=4 * agent.max_steps + 4)
    messages = [m for m in recent if m.seq > before]
    stop = {"done": "end_turn", "streaming": "end_turn"}.get(live.status, live.status)
    return Response(messages, usage or Usage(), steps, stop)


def interpolate(cell: str, namespace: dict[str, Any], errors: Mapping[int, Any] | None = None) -> str:
    """Replace ``{name}`` / ``{name.attr}`` with notebook values, ``{In[n]}`` / ``{Out[n]}`` / ``{Err[n]}`` with
    cell n's source, result and error (``errors``: notebook/_cells.py's record); ``{{``/``}}`` are literal braces."""

    def field(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        expr = m.group(1).strip()
        if cell_ref := _CELL.match(expr):
            return _cell_field(cell_ref.group(1), int(cell_ref.group(2)), namespace, errors or {})
        if not _DOTTED.match(expr):
            return token  # JSON, code, set literals: not a variable reference, leave it alone
        head, *attrs = expr.split(".")
        if head not in namespace:
            raise UsageError(f"The cell refers to {{{expr}}} but no variable {head!r} is defined in the notebook. "
                             f"Define it first, or write {{{{{expr}}}}} for literal braces.")
        value = namespace[head]
        for attr in attrs:
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise UsageError(f"{{{expr}}}: {type(value).__name__} object has no attribute {attr!r}.") from None
        return str(value)

    return _FIELD.sub(field, cell)


def _cell_field(kind: str, n: int, namespace: dict[str, Any], errors: Mapping[int, Any]) -> str:
    """``{In[n]}``, ``{Out[n]}`` or ``{Err[n]}`` as text; a UsageError that says what exists when it does not."""
    if kind == "Err":
        if n not in errors:
            failed = ", ".join(f"In[{k}]" for k in sorted(errors)[-5:]) or "none so far"
            raise UsageError(f"{{Err[{n}]}}: cell {n} raised no error (cells that did: {failed}).")
        return str(errors[n].as_text())
    history = namespace.get("In" if kind == "In" else "Out")
    if kind == "In" and isinstance(history, list) and 0 < n < len(history):
        return str(history[n])
    if kind == "Out" and isinstance(history, dict) and n in history:
        return str(history[n])
    what = "no cell" if kind == "In" else "no result (a cell whose last line is an expression has one)"
    raise UsageError(f"{{{kind}[{n}]}}: {what} In[{n}] in this kernel.")
