"""``%letta agents | create | use | delete | import | export``: which agents exist and which one the notebook
talks to, and moving agents in and out as Letta Agent Files.

``create`` and ``use`` set the *current* agent, the default of ``%%letta``, ``memory``, ``archival``,
``tool add`` and ``chat``. Deleting the current agent clears it, so no later command silently targets a
name that no longer exists.
"""

from __future__ import annotations

import contextlib
from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.notebook._commands import command
from letta_nb.notebook.display import Notice, agents_frame


@command("agents", "list agents (DataFrame)")
@magic_arguments("letta agents")
def agents(args: Any, session: Any, shell: Any) -> Any:
    """List every agent in the store as a DataFrame; the current one is marked."""
    return agents_frame(session.client.agents.list(), session.agent)


@command("create", "create an agent and make it current")
@magic_arguments("letta create")
@argument("name", help="the agent's name (letters, digits, space, _ - .)")
@argument("--model", help="model spec, e.g. offline or 'offline?latency_ms=50&tps=200' (default: %%letta config)")
@argument("--embedding", help="embedder name, e.g. hash or local (default: %%letta config)")
@argument("--persona", default=None, help="the persona block: who the agent is")
@argument("--human", default="", help="the human block: what it knows about you")
@argument("--replace", action="store_true", help="delete an existing agent of that name first (a fresh start)")
def create(args: Any, session: Any, shell: Any) -> Any:
    """Create an agent with persona and human core-memory blocks, and make it the current agent."""
    from letta_nb._client_args import DEFAULT_PERSONA
    from letta_nb.errors import AgentNotFoundError

    if args.replace:
        with contextlib.suppress(AgentNotFoundError):
            session.client.agents.delete(args.name)
    agent = session.client.agents.create(
        args.name,
        model=args.model or session.defaults["model"],
        embedding=args.embedding or session.defaults["embedding"],
        memory_blocks=[{"label": "persona", "value": DEFAULT_PERSONA if args.persona is None else args.persona},
                       {"label": "human", "value": args.human}],
    )
    session.agent = agent.name
    return Notice(f"Agent {agent.name!r} created (model {agent.model}, embedding {agent.embedding}); "
                  "it is now the current agent.", agent)


@command("use", "make an existing agent current")
@magic_arguments("letta use")
@argument("name", help="an agent name or id")
def use(args: Any, session: Any, shell: Any) -> Any:
    """Make NAME the current agent (the default target of %%letta and the other subcommands)."""
    agent = session.client.agents.retrieve(args.name)
    session.agent = agent.name
    return Notice(f"Current agent: {agent.name!r} (model {agent.model}).", agent)


@command("delete", "delete an agent and everything it remembers")
@magic_arguments("letta delete")
@argument("name", help="an agent name or id")
def delete(args: Any, session: Any, shell: Any) -> Any:
    """Delete agent NAME with its messages, blocks and passages. There is no undo."""
    agent = session.client.agents.retrieve(args.name)
    session.client.agents.delete(agent.id)
    if session.agent in (agent.name, agent.id):
        session.agent = None
    return Notice(f"Agent {agent.name!r} deleted.")


@command("import", "import a Letta Agent File (.af) and make its agent current")
@magic_arguments("letta import")
@argument("path", help="the .af file")
@argument("--model", help="model spec for every imported agent, e.g. offline (needed when the file's cannot run here)")
@argument("--embedding", help="embedder for every imported agent, e.g. hash (needed when the file's cannot run here)")
@argument("--name", help="a new name for the file's main agent")
@argument("--suffix", default="", help="appended to every imported agent's name, e.g. -2")
@argument("--keep-tools", action="store_true", help="a stored tool of the same name is used as it is")
def import_file(args: Any, session: Any, shell: Any) -> Any:
    """Import PATH (agents, blocks, tools, rules, messages; see client.agents.import_file) in one go, show
    what was imported, mapped or not supported, and make the file's main agent current."""
    report = session.client.agents.import_file(
        args.path, model=args.model, embedding=args.embedding, name=args.name, suffix=args.suffix,
        existing_tools="keep" if args.keep_tools else "error")
    session.agent = report.agent.name
    return report


@command("export", "write an agent as a Letta Agent File (.af)")
@magic_arguments("letta export")
@argument("agent", help="an agent name or id")
@argument("path", help="the .af file to write")
def export_file(args: Any, session: Any, shell: Any) -> Any:
    """Write AGENT (with the rest of its sleep-time group, if it was imported with one) to PATH in Letta's
    Agent File format; it holds no API key."""
    path = session.client.agents.export_file(args.agent, args.path)
    return Notice(f"Agent {args.agent!r} exported to {str(path)!r}.")
