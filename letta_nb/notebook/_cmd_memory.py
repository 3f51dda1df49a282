"""``%letta memory [AGENT] | memory set | archival insert | archival search``: the agent's two editable memories.

Core memory is shown as block cards; archival search returns a DataFrame (score, text, tags) so it can be
sorted and filtered. Edits go through the public API, so they take the agent's lock and never land in the
middle of a running step.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.notebook._commands import command
from letta_nb.notebook.display import MemoryView, Notice, passages_frame


@command("memory", "show an agent's core-memory blocks")
@magic_arguments("letta memory")
@argument("agent", nargs="?", help="agent name (default: the current agent)")
def memory(args: Any, session: Any, shell: Any) -> Any:
    """Show the core-memory blocks of AGENT (default: the current agent)."""
    name = session.agent_or_current(args.agent)
    agent = session.client.agents.retrieve(name)
    return MemoryView(agent.name, agent.blocks)


@command("memory set", "replace the value of a core-memory block")
@magic_arguments("letta memory set")
@argument("label", help="block label, e.g. human or persona")
@argument("value", nargs="+", help="the new value (quote it, or write several words)")
@argument("--agent", help="agent name (default: the current agent)")
def memory_set(args: Any, session: Any, shell: Any) -> Any:
    """Replace block LABEL's value. A value over the block's limit is refused and nothing changes."""
    name = session.agent_or_current(args.agent)
    block = session.client.agents.blocks.update(name, args.label, value=" ".join(args.value))
    return Notice(f"Block {block.label!r} of {name!r} set ({block.chars}/{block.limit} chars).", block)


@command("archival insert", "file a passage in archival memory")
@magic_arguments("letta archival insert")
@argument("text", nargs="+", help="the passage text")
@argument("--tags", default="", help="comma-separated tags")
@argument("--agent", help="agent name (default: the current agent)")
def archival_insert(args: Any, session: Any, shell: Any) -> Any:
    """Insert TEXT as an archival-memory passage (embedded and searchable)."""
    name = session.agent_or_current(args.agent)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    passage = session.client.agents.passages.create(name, " ".join(args.text), tags=tags or None)
    return Notice(f"Passage {passage.id} filed in the archival memory of {name!r}.", passage)


@command("archival search", "search archival memory (DataFrame)")
@magic_arguments("letta archival search")
@argument("query", nargs="+", help="what to look for")
@argument("-k", "--top-k", type=int, default=5, help="how many passages (default 5)")
@argument("--agent", help="agent name (default: the current agent)")
def archival_search(args: Any, session: Any, shell: Any) -> Any:
    """Search archival memory for QUERY; one row per passage, closest first."""
    if args.top_k < 1:
        raise UsageError(f"-k must be a positive number of passages, got {args.top_k}.")
    name = session.agent_or_current(args.agent)
    return passages_frame(session.client.agents.passages.search(name, " ".join(args.query), top_k=args.top_k))
