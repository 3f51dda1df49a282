"""``%letta fix``: send the notebook's last error, with the cell that raised it, to an agent.

The error comes from notebook/_cells.py's record (every failing cell's source and traceback, kept by a
``post_run_cell`` hook), or IPython's ``sys.last_value`` when the hook was not yet installed. The message is
sent and streamed exactly as ``%%letta`` sends a cell, so the reply, its tool steps and Ctrl-C behave alike.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.notebook._cells import CellError, cell_errors, last_error
from letta_nb.notebook._commands import command

__all__ = ["fix", "fix_message"]


def fix_message(error: CellError, note: str = "") -> str:
    """What ``%letta fix`` sends: the failing cell, its traceback and what the user added."""
    where = f"cell In[{error.cell}]" if error.cell is not None else "the last cell"
    source = error.source.rstrip() or "(source unknown)"
    ask = note.strip() or "Explain the error and how to fix the cell."
    return (f"{ask}\n\nThe error {where} raised: {error.error}\n\nThe cell:\n```python\n{source}\n```\n\n"
            f"Traceback:\n```\n{error.traceback.rstrip()}\n```")


@command("fix", "send the last error and its cell to the agent")
@magic_arguments("letta fix")
@argument("agent", nargs="?", help="the agent (default: the current agent)")
@argument("-n", "--cell", type=int, default=None, help="the error of this cell (In[N]) instead of the last one")
@argument("-m", "--message", default="", help="what to ask (default: explain the error and how to fix the cell)")
def fix(args: Any, session: Any, shell: Any) -> Any:
    """Send the last error (or cell N's, with -n N) with the cell that raised it to the agent; its reply
    streams as under %%letta."""
    if args.cell is not None:
        errors = cell_errors(shell)
        if args.cell not in errors:
            failed = ", ".join(str(k) for k in sorted(errors)[-5:]) or "none so far"
            raise UsageError(f"-n {args.cell}: cell {args.cell} raised no error (cells that did: {failed}).")
        error: CellError | None = errors[args.cell]
    else:
        error = last_error(shell)
    if error is None:
        raise UsageError("No error to fix: no cell has raised one in this kernel yet.")
    from letta_nb.notebook.magics import _stream_reply  # the %%letta path (magics imports this module)

    client = session.client
    agent = client.agents.retrieve(session.agent_or_current(args.agent))
    live, response = _stream_reply(client, agent, fix_message(error, args.message), "md")
    if live.error:
        raise UsageError(f"agent {agent.name!r} failed: {live.error}")
    return None
