"""``%letta load | stats | context | sql | models | config | chat``: ingestion, probes, the context window, the store,
configuration, the chat widget.

Thin shells over the Python API: ``load`` is ``client.agents.files.upload`` (its report as a DataFrame),
``stats`` is ``letta_nb.probes``, ``sql`` is ``client.query`` (read-only, through the runtime's own
sqlite3 module), ``chat`` is :class:`~letta_nb.notebook.widget.ChatWidget`. Paths are checked here so a
typo gets a message naming the directory relative paths start from.
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from letta_nb.errors import OptionalDependencyError
from letta_nb.notebook._commands import command
from letta_nb.notebook.display import Notice, records_frame, steps_frame

STATS_KINDS = ("pool", "cache", "tools", "locks", "embedder", "steps", "spans", "metrics")
_PROVIDERS = {  # what `%letta models` says about providers it knows; others get a generic line
    "offline": ("offline, 'offline?latency_ms=50&tps=200'", "", "built in: deterministic, tool-calling, no key"),
    "openai": ("openai/gpt-4o-mini", "OPENAI_API_KEY", "OpenAI or any compatible endpoint (OPENAI_BASE_URL)"),
    "ollama": ("ollama/llama3.1", "", "a local Ollama server (OLLAMA_BASE_URL, default localhost:11434)"),
}


@command("load", "ingest files or folders into archival memory")
@magic_arguments("letta load")
@argument("paths", nargs="+", metavar="PATH", help="files or directories to ingest")
@argument("--agent", help="agent whose archival memory receives them (default: the current agent)")
def load(args: Any, session: Any, shell: Any) -> Any:
    """Chunk, embed and store PATH... in the agent's archival memory, with a progress bar; re-running adds
    only what changed. Returns the ingestion report as a DataFrame."""
    missing = [p for p in args.paths if not os.path.exists(os.path.expanduser(p))]
    if missing:
        raise UsageError(f"No such file or directory: {', '.join(repr(p) for p in missing)} "
                         f"(relative paths start at {os.getcwd()!r}).")
    name = session.agent_or_current(args.agent)
    report = session.client.agents.files.upload(name, [os.path.expanduser(p) for p in args.paths], progress=True)
    return report.to_dataframe()


@command("stats", "runtime statistics (DataFrame)")
@magic_arguments("letta stats")
@argument("kind", choices=STATS_KINDS, help="what to measure: " + ", ".join(STATS_KINDS))
def stats(args: Any, session: Any, shell: Any) -> Any:
    """One DataFrame of runtime statistics: letta_nb.probes.KIND(client) for this notebook's client
    (letta_nb.probes also has the plots). steps is shown for reading: milliseconds first, local times,
    agent names and short ids; letta_nb.probes.steps() has the full frame."""
    from letta_nb import probes

    frame = getattr(probes, args.kind)(session.client)
    if args.kind == "steps":
        names = {a.id: a.name for a in session.client.agents.list()}
        return steps_frame(frame, names)
    return frame


@command("context", "what fills an agent's context window (DataFrame and bar chart)")
@magic_arguments("letta context")
@argument("agent", nargs="?", help="the agent (default: the current agent)")
def context(args: Any, session: Any, shell: Any) -> Any:
    """Tokens of the agent's system prompt, core memory, summary note, tool schemas and messages against its
    model's window (client.agents.context): a stacked bar chart (needs matplotlib, the notebook extra) above
    the returned DataFrame. client.agents.messages.preview(agent, text) shows the exact next request."""
    from IPython.display import display

    window = session.client.agents.context(session.agent_or_current(args.agent))
    try:
        display(window.plot())
    except OptionalDependencyError as e:  # the frame says it all; the chart is a bonus
        display(Notice(str(e)))
    return window.to_dataframe()


@command("sql", "read-only SQL on the store (DataFrame)")
@magic_arguments("letta sql")
@argument("statement", nargs="+", metavar="SQL", help="one read-only statement, taken verbatim to the end of the line")
def sql(args: Any, session: Any, shell: Any) -> Any:
    """Run one read-only statement on this notebook's store and return a DataFrame, e.g.
    %letta sql SELECT name, model FROM agents. The safe way to look while the client is open (a
    sqlite3.connect(path) of your own can break the runtime's locks); writes are refused. Tables:
    %letta sql SELECT name FROM sqlite_master WHERE type = 'table'."""
    if not args.line:
        raise UsageError("%letta sql needs a statement, e.g. %letta sql SELECT name, model FROM agents")
    return session.client.query(args.line)


sql.raw_line = True  # dispatch passes the line verbatim (quotes are SQL's, not the shell's)


@command("models", "list model providers (DataFrame)")
@magic_arguments("letta models")
def models(args: Any, session: Any, shell: Any) -> Any:
    """List the model providers this build knows, an example spec for each and whether it is ready to use:
    ready means its endpoint answered just now (GET .../models, at most 1.5 s, cached 10 s); `checked` says
    what was asked and what came back."""
    from letta_nb.llm.readiness import provider_readiness
    from letta_nb.llm.registry import KNOWN_PROVIDERS

    rows = []
    for provider in KNOWN_PROVIDERS:
        example, key, about = _PROVIDERS.get(provider, (provider, "", ""))
        status = provider_readiness(provider)
        rows.append({"provider": provider, "example": example, "needs": key or "-",
                     "ready": status.ready, "checked": status.checked, "about": about})
    return records_frame(rows, ["provider", "example", "needs", "ready", "checked", "about"])


@command("config", "show settings (DataFrame) or set notebook defaults")
@magic_arguments("letta config")
@argument("key", nargs="?", choices=("model", "embedding"), help="a default to set: model or embedding")
@argument("value", nargs="?", help="its new value, e.g. 'offline?latency_ms=50'")
def config(args: Any, session: Any, shell: Any) -> Any:
    """Without arguments, a DataFrame of every setting (value, where it came from, its environment variable;
    API keys only as set or not, never their text), the store and the current agent. With KEY VALUE, set
    the default model or embedding that %letta create uses in this notebook."""
    settings = session.client.runtime.settings
    if args.key is not None:
        if args.value is None:
            raise UsageError(f"%letta config {args.key} needs a value, e.g. %letta config {args.key} "
                             f"{session.defaults[args.key]}")
        settings.check_provider(args.value, args.key)  # allowed_providers
        if args.key == "model":
            from letta_nb.llm.registry import resolve_model

            resolve_model(args.value)  # an unknown name raises with the known ones listed
        else:
            from letta_nb.embeddings.registry import resolve_embedder

            resolve_embedder(args.value)
        session.defaults[args.key] = args.value
        return Notice(f"Default {args.key} is now {args.value!r}.")
    return records_frame(_config_rows(session, settings), ["setting", "value", "source", "env var"]).set_index(
        "setting")


def _config_rows(session: Any, settings: Any) -> list[dict[str, Any]]:
    import letta_nb
    from letta_nb.llm.registry import PROVIDERS

    rows: list[dict[str, Any]] = [
        {"setting": "version", "value": letta_nb.__version__, "source": "letta_nb", "env var": "-"},
        {"setting": "store", "value": session.client.store_location,
         "source": "%load_ext / connect(where)" if session._where is not None else "home", "env var": "-"},
        {"setting": "current agent", "value": session.agent or "(none)", "source": "%letta create / use",
         "env var": "-"},
    ]
    for row in settings.rows():
        kind = {"default_model": "model", "default_embedding": "embedding"}.get(row["setting"])
        if kind is not None and session.defaults[kind] != row["value"]:
            row = {**row, "value": session.defaults[kind], "source": f"%letta config {kind}"}
        rows.append(row)
    keys = session.client.runtime.api_keys
    for provider, (_, _, key_env, _) in PROVIDERS.items():  # secrets: whether set and where, never the text
        source = "connect(api_keys=)" if provider in keys else f"env {key_env}" if os.environ.get(key_env) else "-"
        rows.append({"setting": f"api_keys.{provider}", "value": "(not set)" if source == "-" else "set (hidden)",
                     "source": source, "env var": key_env})
    return rows


@command("chat", "open the chat widget")
@magic_arguments("letta chat")
@argument("agent", nargs="?", help="agent name (default: the current agent)")
def chat(args: Any, session: Any, shell: Any) -> Any:
    """Open a ChatWidget on AGENT: streamed replies, tool-call steps, live core memory, a Stop button."""
    from letta_nb.notebook.widget import ChatWidget

    name = session.agent_or_current(args.agent)
    return ChatWidget(name, client=session.client)
