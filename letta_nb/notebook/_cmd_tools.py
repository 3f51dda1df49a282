"""``%letta tools | tool add FUNC``: register notebook functions as agent tools.

``tool add`` looks FUNC up in the notebook's namespace (the function you just defined in a cell),
registers it (schema from signature and docstring) and attaches it to the agent. Re-running the cell
after editing the function re-registers it, so the agent always calls the latest definition.
"""

from __future__ import annotations

import difflib
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.notebook._commands import command
from letta_nb.notebook.display import Notice, records_frame


@command("tools", "list tools (DataFrame)")
@magic_arguments("letta tools")
@argument("--agent", help="mark the tools attached to this agent (default: the current agent)")
def tools(args: Any, session: Any, shell: Any) -> Any:
    """List every tool (base tools and your functions), marking those the agent can call."""
    from letta_nb.runtime.base_tools import BASE_TOOL_NAMES

    client = session.client
    name = args.agent or session.agent
    attached = set(client.agents.tools.list(name)) if name else set()
    rows = [{"name": t, "kind": "base" if t in BASE_TOOL_NAMES else "user", "attached": t in attached}
            for t in client.tools.list()]
    return records_frame(rows, ["name", "kind", "attached"])


@command("tool add", "register a notebook function as a tool and attach it")
@magic_arguments("letta tool add")
@argument("func", help="name of a function defined in the notebook")
@argument("--parallel", action="store_true", help="safe to run concurrently with other calls")
@argument("--sandbox", action="store_true",
          help="run in the sandbox: isolated where this machine allows (see README), else a separate process")
@argument("--strict", action="store_true", help="like --sandbox, but refuse to run where isolation is unavailable")
@argument("--network", action="store_true", help="let the sandboxed tool use the network (off by default)")
@argument("--timeout", type=float, default=30.0, help="seconds before the call is abandoned (default 30)")
@argument("--agent", help="agent to attach it to (default: the current agent)")
def tool_add(args: Any, session: Any, shell: Any) -> Any:
    """Register function FUNC from the notebook namespace as a tool and attach it to the agent."""
    ns = shell.user_ns
    func = ns.get(args.func)
    if func is None:
        hidden = getattr(shell, "user_ns_hidden", {})
        candidates = [k for k, v in ns.items() if callable(v) and not k.startswith("_") and k not in hidden]
        close = difflib.get_close_matches(args.func, candidates, n=1)
        hint = (f" Did you mean {close[0]!r}?" if close
                else " Define it in a cell first (def " + args.func + "(...): ...).")
        raise UsageError(f"No function named {args.func!r} in the notebook namespace.{hint}")
    if not callable(func) or isinstance(func, type):
        raise UsageError(f"{args.func!r} is a {type(func).__name__}, not a function; tools are plain Python functions.")
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {args.timeout}.")
    name = session.agent_or_current(args.agent)
    client = session.client
    if args.network and not (args.sandbox or args.strict):
        raise UsageError("--network applies to sandboxed tools: add --sandbox or --strict (a tool in the kernel "
                         "already has the kernel's network).")
    sandbox = "strict" if args.strict else args.sandbox
    spec = client.tools.upsert_from_function(func, parallel_safe=args.parallel, sandbox=sandbox,
                                             timeout=args.timeout, network=args.network)
    if spec.name not in client.agents.tools.list(name):
        client.agents.tools.attach(name, spec.name)
    return Notice(f"Tool {spec.name!r} registered and attached to {name!r}.", spec)
