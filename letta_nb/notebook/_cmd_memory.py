"""``%letta memory [AGENT] | memory set | archival insert | archival search | compact | reset``: the agent's
editable memories, and room in its context window.

Core memory is shown as block cards; archival search returns a DataFrame (score, text, tags) so it can be
sorted and filtered. Edits go through the public API, so they take the agent's lock and never land in the
middle of a running step. ``compact`` has a model fold all but the last turn of the context window into the
agent's summary (runtime/compaction.py); ``reset`` empties the window. Neither deletes anything: recall
memory keeps every message.
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


@command("compact", "summarise an agent's conversation now (all but the last turn)")
@magic_arguments("letta compact")
@argument("agent", nargs="?", help="agent name (default: the current agent)")
def compact(args: Any, session: Any, shell: Any) -> Any:
    """Fold every message of AGENT's context window but the last turn into its summary, written by the
    summariser model (``summarizer_model``, else the agent's own). Recall memory keeps them all."""
    name = session.agent_or_current(args.agent)
    before = session.client.agents.context(name)
    agent = session.client.agents.messages.compact(name)
    after = session.client.agents.context(name)
    return Notice(f"Compacted {name!r}: {before.messages_in_window - after.messages_in_window} messages folded into "
                  f"its summary; the window went from {before.total} to {after.total} of {after.context_window} "
                  "tokens.", agent)


@command("reset", "empty an agent's context window (recall memory keeps every message)")
@magic_arguments("letta reset")
@argument("agent", nargs="?", help="agent name (default: the current agent)")
def reset(args: Any, session: Any, shell: Any) -> Any:
    """Start AGENT's conversation afresh: its context window and summary are emptied, its core memory stays,
    and recall memory keeps every message (``conversation_search`` still finds them)."""
    name = session.agent_or_current(args.agent)
    agent = session.client.agents.messages.reset(name)
    return Notice(f"Reset {name!r}: its context window is empty; recall memory keeps every message.", agent)
