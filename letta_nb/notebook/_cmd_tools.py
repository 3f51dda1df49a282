"""``%letta tools | tool add FUNC | approve CALL_ID``: register notebook functions as agent tools, answer calls.

``tool add`` looks FUNC up in the notebook's namespace (the function you just defined in a cell),
registers it (schema from signature and docstring) and attaches it to the agent. Re-running the cell
after editing the function re-registers it, so the agent always calls the latest definition. ``--approve``
makes each call wait for a person; ``approve CALL_ID [--deny]`` answers one (runtime/approvals.py).
``rules [AGENT]`` shows an agent's tool rules (runtime/rule_solver.py enforces them), ``rules add TYPE TOOL``
and ``rules remove INDEX`` edit them through ``client.agents.update``, which checks them. ``tools kernel
on|off [AGENT]`` lets an agent see the kernel (notebook/kernel_tools.py).
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
@argument("--approve", action="store_true",
          help="each call waits for your approval (Approve / Deny, or %%letta approve CALL_ID)")
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
                                             timeout=args.timeout, network=args.network,
                                             requires_approval=args.approve)
    if spec.name not in client.agents.tools.list(name):
        client.agents.tools.attach(name, spec.name)
    return Notice(f"Tool {spec.name!r} registered and attached to {name!r}.", spec)


@command("approve", "answer a tool call that waits for approval")
@magic_arguments("letta approve")
@argument("call_id", help="the waiting call's id (shown under the reply that stopped for it)")
@argument("--deny", action="store_true", help="do not run it; the model reads --reason instead")
@argument("--reason", default=None, help="why (the model reads it when you deny)")
@argument("--agent", help="the agent whose call it is (default: the current agent)")
def approve(args: Any, session: Any, shell: Any) -> Any:
    """Approve (run once) or --deny a tool call that waits for approval; the agent's turn then goes on and
    its Response is shown."""
    name = session.agent_or_current(args.agent)
    response = session.client.agents.messages.approve(name, args.call_id, not args.deny, reason=args.reason)
    if response.pending_approvals:  # it went on and stopped on another call
        from IPython.display import display

        from letta_nb.notebook._approval_view import ApprovalBox

        display(response)
        return ApprovalBox(session.client, name, response.pending_approvals)
    return response


@command("rules", "show an agent's tool rules (DataFrame); add or remove one")
@magic_arguments("letta rules")
@argument("words", nargs="*", metavar="[AGENT] [add TYPE TOOL | remove INDEX]",
          help="the agent (default: the current one), then optionally: add TYPE TOOL, or remove INDEX")
@argument("--children", help="comma-separated tools (constrain_child_tools, parent_last_tool)")
@argument("--mapping", help="conditional: comma-separated OUTPUT=TOOL pairs, e.g. urgent=escalate,routine=file")
@argument("--default", help="conditional: the tool when no output matches (default_child)")
@argument("--limit", type=int, help="max_count_per_step: calls allowed per turn")
def rules(args: Any, session: Any, shell: Any) -> Any:
    """Show AGENT's tool rules as a DataFrame (index, type, tool_name, detail); `add TYPE TOOL` appends one
    (types: run_first exit_loop continue_loop constrain_child_tools conditional max_count_per_step
    parent_last_tool required_before_exit requires_approval), `remove INDEX` drops one."""
    from letta_nb.runtime.rule_solver import rule_rows

    words = list(args.words)
    agent = words.pop(0) if words and words[0] not in ("add", "remove") else None
    name = session.agent_or_current(agent)
    client = session.client
    current = list(client.agents.retrieve(name).tool_rules)
    if words and words[0] == "add":
        if len(words) != 3:
            raise UsageError("%letta rules add needs TYPE and TOOL, e.g. %letta rules add run_first lookup")
        rule: dict[str, Any] = {"type": words[1], "tool_name": words[2]}
        if args.children:
            rule["children"] = [c.strip() for c in args.children.split(",") if c.strip()]
        if args.mapping:
            pairs = [p.partition("=") for p in args.mapping.split(",") if p.strip()]
            if any(not sep or not out.strip() or not tool.strip() for out, sep, tool in pairs):
                raise UsageError(f"--mapping takes OUTPUT=TOOL pairs separated by commas, got {args.mapping!r}")
            rule["child_output_mapping"] = {out.strip(): tool.strip() for out, _, tool in pairs}
        if args.default:
            rule["default_child"] = args.default
        if args.limit is not None:
            rule["max_count_limit"] = args.limit
        current.append(rule)
    elif words and words[0] == "remove":
        if len(words) != 2 or not words[1].isdigit() or int(words[1]) >= len(current):
            raise UsageError(f"%letta rules remove needs the INDEX of a rule (0 to {len(current) - 1}), "
                             f"got {' '.join(words[1:]) or 'nothing'}; %letta rules {name} lists them.")
        del current[int(words[1])]
    elif words:
        raise UsageError(f"%letta rules: expected 'add TYPE TOOL' or 'remove INDEX' after the agent, got {words[0]!r}")
    if words:
        current = client.agents.update(name, tool_rules=current).tool_rules
    return records_frame(rule_rows(current), ["index", "type", "tool_name", "detail"])


@command("tools kernel", "let an agent see the kernel: kernel tools on or off")
@magic_arguments("letta tools kernel")
@argument("state", choices=("on", "off"), help="on: attach the kernel tools; off: detach them")
@argument("agent", nargs="?", help="the agent (default: the current agent)")
def tools_kernel(args: Any, session: Any, shell: Any) -> Any:
    """Attach (on) or detach (off) the kernel tools (letta_nb/notebook/kernel_tools.py): list_variables,
    describe_variable, read_cell, last_error, show_figure, and run_python, which always waits for your approval."""
    from letta_nb.notebook import kernel_tools

    name = session.agent_or_current(args.agent)
    if args.state == "on":
        kernel_tools.enable(session.client, name)
        return Notice(f"Agent {name!r} now sees this kernel: {', '.join(kernel_tools.KERNEL_TOOL_NAMES)} "
                      "(run_python asks you first).")
    kernel_tools.disable(session.client, name)
    return Notice(f"Kernel tools detached from {name!r}.")
