"""The public Python API, shaped like ``letta_client`` (``client.agents.messages.create`` ...).

One design, two surfaces: each operation is written once as an ``async def _name`` that runs on the
runtime loop; ``name = sync_twin(_name)`` derives the blocking ``name`` (submits and waits; Ctrl-C cancels
cleanly) and ``aname = async_twin(_name)`` the awaitable ``aname`` (usable with top-level ``await`` in a cell or
inside any event loop). They are typed descriptors (:mod:`letta_nb._twins`), so mypy and editors see both
surfaces with the implementation's parameters and result. Each class declares its twins at the end of its
body: a class attribute named ``list`` would otherwise shadow the builtin in the annotations after it. A
parity test checks every sync method has its async twin with the same signature.

Agents can be named by id, by name or by the AgentState itself.

A thin shell: each operation checks the shape of its arguments (:mod:`letta_nb._client_args`) and calls
one function of the runtime services (:mod:`letta_nb.runtime.services`), which hold the domain rules and
every read and write of the store; each change of an agent takes its lease there, in one place.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import queue
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from letta_nb import agentfile as _agentfile
from letta_nb._client_args import (
    agent_name,
    agent_ref,
    block_label,
    block_limit,
    block_value,
    checked_api_keys,
    flag,
    function_arg,
    input_text,
    memory_blocks_from,
    metadata_arg,
    optional_text,
    positive_int,
    store_where,
    tag_match_mode_arg,
    tags_arg,
    text_arg,
    timeout_arg,
    tool_name_arg,
    tool_ref,
    tools_arg,
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.agentfile import ImportReport
from letta_nb.embeddings.ingest import DEFAULT_MAX_FILE_MB
from letta_nb.embeddings.ingest_report import IngestReport, UploadedFile
from letta_nb.errors import TurnCancelledError
from letta_nb.runtime.agent_loop import run_turn
from letta_nb.runtime.events import StreamEvent
from letta_nb.runtime.loop_thread import Job, RuntimeThread, wait_interruptibly
from letta_nb.runtime.runtime import Runtime
from letta_nb.runtime.services import agents as _agents
from letta_nb.runtime.services import blocks as _blocks
from letta_nb.runtime.services import files as _files
from letta_nb.runtime.services import lookup as _lookup
from letta_nb.runtime.services import messages as _messages
from letta_nb.runtime.services import passages as _passages
from letta_nb.runtime.services import store_info as _store_info
from letta_nb.runtime.services import tools as _tools
from letta_nb.runtime.tool_rules import DEFAULT_AGENT_TYPE, agent_type_arg
from letta_nb.runtime.tool_rules import normalize as normalize_tool_rules
from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import AgentState, Block, Message, Passage, Response
from letta_nb.settings import Settings
from letta_nb.settings import resolve as resolve_settings
from letta_nb.store.ids import new_id

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AgentRef", "Client", "connect"]

AgentRef: TypeAlias = str | AgentState
"""How the API names an agent: its name, its id, or the AgentState itself."""
StrPath: TypeAlias = str | os.PathLike[str]

_MAX_ROWS = 1_000_000_000  # a row count SQLite's 64-bit integers hold with room to spare
_MAX_TOP_K = 10_000


class _Resource:
    def __init__(self, client: Client):
        self._client = client
        self._thread = client._thread

    @property
    def _rt(self) -> Runtime:
        return self._client._runtime


class Messages(_Resource):
    """Send messages to an agent and read its recall memory."""

    async def _create(self, agent: AgentRef, input: str | None = None, *,
                      messages: list[dict[str, Any]] | None = None) -> Response:
        """Send ``input`` (or letta_client-style ``messages=[{"role": "user", "content": ...}]``); returns a
        Response."""
        return await self._turn(agent, input, messages)

    async def _list(self, agent: AgentRef, *, limit: int | None = None) -> list[Message]:
        """Recall memory, oldest first (the newest ``limit`` when given)."""
        agent = agent_ref(agent)
        if limit is not None:
            positive_int(limit, "limit", hi=_MAX_ROWS)
        return await _messages.recall(self._rt, agent, limit=limit)

    async def _cancel(self, agent: AgentRef) -> bool:
        """Cancel the agent's running turn (what it streamed so far is kept). False if none was running.

        A ``create`` waiting for that turn raises :class:`~letta_nb.errors.TurnCancelledError` (its
        ``.response`` is the partial turn); a stream ends with a ``cancelled`` StopEvent."""
        return await _messages.cancel(self._rt, agent_ref(agent))

    def stream(self, agent: AgentRef, input: str | None = None, *,
               messages: list[dict[str, Any]] | None = None) -> Iterator[StreamEvent]:
        """Yield events as the turn runs. Closing the iterator early (or Ctrl-C) cancels the turn."""
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()

        job = self._start_stream(agent, input, messages, events.put, done)
        try:
            while not _stream_ended(item := wait_interruptibly(lambda t: events.get(timeout=t)), done):
                yield item
        finally:
            if not job.done():
                job.cancel_and_wait()  # closing the iterator early stops the turn; its partial reply is kept

    async def astream(self, agent: AgentRef, input: str | None = None, *,
                      messages: list[dict[str, Any]] | None = None) -> AsyncIterator[StreamEvent]:
        """Yield events as the turn runs. Closing the iterator early (or Ctrl-C) cancels the turn."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        job = self._start_stream(agent, input, messages, put, done)
        try:
            while not _stream_ended(item := await events.get(), done):
                yield item
        finally:
            if not job.done():
                job.cancel()

    def _start_stream(self, agent: Any, input: Any, messages: Any, put: Callable[[Any], None],
                      done: object) -> Job[None]:
        """Run a turn on the runtime loop, putting its events, then an exception if any, then ``done``."""

        async def produce() -> None:
            try:
                await self._turn(agent, input, messages, put)
            except BaseException as e:
                put(e)
                raise
            finally:
                put(done)

        return self._thread.submit(produce())

    async def _turn(self, agent: Any, input: Any, messages: Any, emit: Callable[[Any], None] | None = None) -> Response:
        text = input_text(input, messages)
        return await run_turn(self._rt, agent_ref(agent), text, emit)  # resolved in arrival order (locks.py)

    create, acreate = sync_twin(_create), async_twin(_create)
    list, alist = sync_twin(_list), async_twin(_list)
    cancel, acancel = sync_twin(_cancel), async_twin(_cancel)


def _stream_ended(item: Any, done: object) -> bool:
    """The stream protocol of ``_start_stream``: ``done`` or a cancellation ends it, an error is raised."""
    if item is done or isinstance(item, (asyncio.CancelledError, TurnCancelledError)):
        return True
    if isinstance(item, BaseException):
        raise item
    return False


class Blocks(_Resource):
    """Core-memory blocks of an agent."""

    async def _list(self, agent: AgentRef) -> list[Block]:
        """The agent's core-memory blocks, in prompt order."""
        return await _blocks.list_blocks(self._rt, agent_ref(agent))

    async def _retrieve(self, agent: AgentRef, label: str) -> Block:
        """One block by label; BlockNotFoundError (with the labels it has) otherwise."""
        label = block_label(label)
        return await _blocks.get(self._rt, agent_ref(agent), label)

    async def _update(self, agent: AgentRef, label: str, *, value: str | None = None, limit: int | None = None,
                      description: str | None = None, read_only: bool | None = None) -> Block:
        """Change a block. A value over the limit raises BlockLimitError and changes nothing."""
        label, description = block_label(label), optional_text(description, "description")
        read_only = None if read_only is None else flag(read_only, "read_only")
        value = None if value is None else block_value(value)
        limit = None if limit is None else block_limit(limit)
        return await _blocks.update(self._rt, agent_ref(agent), label, value=value, limit=limit,
                                    description=description, read_only=read_only)

    list, alist = sync_twin(_list), async_twin(_list)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    update, aupdate = sync_twin(_update), async_twin(_update)
    modify, amodify = update, aupdate  # letta_client spells it "modify"


class Passages(_Resource):
    """Archival memory of an agent."""

    async def _create(self, agent: AgentRef, text: str, *, tags: list[str] | None = None) -> Passage:
        """Embed ``text`` with the agent's embedder and store it as a passage (``tags`` to filter searches by)."""
        text, tags = text_arg(text, "text"), tags_arg(tags)
        return await _passages.create(self._rt, agent_ref(agent), text, tags)

    async def _list(self, agent: AgentRef) -> list[Passage]:
        """Every passage of the agent's archival memory."""
        return await _passages.list_passages(self._rt, agent_ref(agent))

    async def _search(self, agent: AgentRef, query: str, *, top_k: int = 5, tags: list[str] | None = None,
                      tag_match_mode: str = "any", start_datetime: dt.datetime | str | None = None,
                      end_datetime: dt.datetime | str | None = None) -> list[Passage]:
        """Closest passages by meaning; ``start_datetime``/``end_datetime`` (datetime or ISO string) bound
        creation time."""
        query, tags = text_arg(query, "query"), tags_arg(tags)
        positive_int(top_k, "top_k", hi=_MAX_TOP_K, hint=" For every passage use passages.list(agent).")
        tag_match_mode = tag_match_mode_arg(tag_match_mode)
        return await _passages.search(self._rt, agent_ref(agent), query, top_k=top_k, tags=tags,
                                      tag_match_mode=tag_match_mode, start_datetime=start_datetime,
                                      end_datetime=end_datetime)

    async def _delete(self, agent: AgentRef, passage_id: str) -> None:
        """Remove one passage; InvalidArgumentError if the agent has none of that id."""
        passage_id = text_arg(passage_id, "passage_id")
        await _passages.delete(self._rt, agent_ref(agent), passage_id)

    create, acreate = sync_twin(_create), async_twin(_create)
    list, alist = sync_twin(_list), async_twin(_list)
    search, asearch = sync_twin(_search), async_twin(_search)
    delete, adelete = sync_twin(_delete), async_twin(_delete)


class Files(_Resource):
    """Files uploaded to an agent's archival memory: chunked by type, embedded, stored; re-uploads are idempotent."""

    async def _upload(self, agent: AgentRef, path_or_paths: StrPath | Iterable[StrPath], *,
                      chunk_size: int | None = None, chunk_overlap: int | None = None, progress: bool = True,
                      max_file_mb: float = DEFAULT_MAX_FILE_MB) -> IngestReport:
        """Upload files and directories (walked for known file types; symlinked directories inside are not
        followed). Unchanged files are ``unchanged``, changed ones replaced; a file that cannot be read or
        fails is an ``error`` row and the rest go on; a file with no text is a ``skipped`` row."""
        return await _files.upload(self._rt, agent_ref(agent), path_or_paths, chunk_size=chunk_size,
                                   chunk_overlap=chunk_overlap, progress=progress, max_file_mb=max_file_mb)

    async def _list(self, agent: AgentRef) -> list[UploadedFile]:
        """The files uploaded to the agent: path, content hash, size, chunks, chunking, when."""
        return await _files.list_files(self._rt, agent_ref(agent))

    async def _delete(self, agent: AgentRef, path: str) -> int:
        """Remove a file's passages and record; returns how many passages were removed."""
        path = text_arg(path, "path")
        return await _files.delete(self._rt, agent_ref(agent), path)

    upload, aupload = sync_twin(_upload), async_twin(_upload)
    list, alist = sync_twin(_list), async_twin(_list)
    delete, adelete = sync_twin(_delete), async_twin(_delete)


class AgentTools(_Resource):
    """Which tools an agent may call."""

    async def _list(self, agent: AgentRef) -> list[str]:
        """The names of the tools the agent may call."""
        return await _tools.agent_tools(self._rt, agent_ref(agent))

    async def _attach(self, agent: AgentRef, tool: Callable[..., Any] | ToolSpec | str) -> list[str]:
        """Give the agent ``tool`` (a function is registered first); the agent's tool names after."""
        return await _tools.attach(self._rt, agent_ref(agent), tool)

    async def _detach(self, agent: AgentRef, tool: str) -> list[str]:
        """Take ``tool`` from the agent (InvalidArgumentError if it does not have it); its tool names after."""
        return await _tools.detach(self._rt, agent_ref(agent), tool)

    list, alist = sync_twin(_list), async_twin(_list)
    attach, aattach = sync_twin(_attach), async_twin(_attach)
    detach, adetach = sync_twin(_detach), async_twin(_detach)


class Agents(_Resource):
    """Create, find and delete agents; ``.messages``, ``.blocks``, ``.passages``, ``.tools`` per agent."""

    def __init__(self, client: Client):
        super().__init__(client)
        self.messages = Messages(client)
        self.blocks = Blocks(client)
        self.passages = Passages(client)
        self.tools = AgentTools(client)
        self.files = Files(client)

    async def _create(
        self,
        name: str | None = None,
        *,
        model: str | None = None,
        embedding: str | None = None,
        memory_blocks: Sequence[dict[str, Any] | Block] | None = None,
        tools: Sequence[Callable[..., Any] | ToolSpec | str] = (),
        system: str | None = None,
        max_steps: int = 10,
        include_base_tools: bool = True,
        metadata: dict[str, Any] | None = None,
        agent_type: str = DEFAULT_AGENT_TYPE,
        tool_rules: list[Any] | None = None,
        tags: list[str] | None = None,
    ) -> AgentState:
        """Create an agent. ``tools`` may hold Python functions (registered on the fly) or tool names;
        ``model``/``embedding`` default to the ``default_model``/``default_embedding`` settings.

        ``agent_type`` is ``"memgpt_agent"`` (replies through send_message) or ``"letta_v1_agent"`` (the
        model's text is the reply); ``tool_rules`` are Letta's rule dicts (``{"type": "exit_loop",
        "tool_name": ...}``), ``tags`` strings to find the agent by."""
        name = agent_name(name if name is not None else f"agent-{new_id('x')[2:10]}")
        positive_int(max_steps, "max_steps", hi=100)
        system, metadata = optional_text(system, "system"), metadata_arg(metadata)
        include_base_tools = flag(include_base_tools, "include_base_tools")
        tools = tools_arg(tools)
        return await _agents.create(self._rt, name, model=model, embedding=embedding,
                                    blocks=memory_blocks_from(memory_blocks), tools=tools, system=system,
                                    max_steps=max_steps, include_base_tools=include_base_tools, metadata=metadata,
                                    agent_type=agent_type_arg(agent_type), tool_rules=normalize_tool_rules(tool_rules),
                                    tags=tags_arg(tags))

    async def _retrieve(self, agent: AgentRef) -> AgentState:
        """The agent as stored now (AgentNotFoundError, with close matches, otherwise)."""
        return await _lookup.agent_state(self._rt, agent_ref(agent))

    async def _update(self, agent: AgentRef, *, model: str | None = None, embedding: str | None = None,
                      system: str | None = None, max_steps: int | None = None,
                      metadata: dict[str, Any] | None = None, agent_type: str | None = None,
                      tool_rules: list[Any] | None = None, tags: list[str] | None = None) -> AgentState:
        """Change an agent's settings (between turns). Setting ``model``/``embedding`` also makes them
        yours: API keys go to an endpoint a spec names only if you wrote that spec (see runtime/trust.py)."""
        max_steps = None if max_steps is None else positive_int(max_steps, "max_steps", hi=100)
        system = optional_text(system, "system")
        metadata = None if metadata is None else metadata_arg(metadata)
        return await _agents.update(
            self._rt, agent_ref(agent), model=model, embedding=embedding, system=system, max_steps=max_steps,
            metadata=metadata, agent_type=None if agent_type is None else agent_type_arg(agent_type),
            tool_rules=None if tool_rules is None else normalize_tool_rules(tool_rules), tags=tags_arg(tags))

    async def _list(self) -> list[AgentState]:
        """Every agent in the store."""
        return await _agents.list_all(self._rt)

    async def _delete(self, agent: AgentRef) -> None:
        """Delete the agent with its blocks, messages, passages and files (between turns)."""
        await _agents.delete(self._rt, agent_ref(agent))

    async def _import_file(self, path_or_bytes: str | os.PathLike[str] | bytes | dict[str, Any], *,
                           model: str | None = None, embedding: str | None = None, name: str | None = None,
                           suffix: str = "", existing_tools: str = "error", max_steps: int = 10) -> ImportReport:
        """Import a Letta Agent File (``.af``: a path, its bytes, or the parsed dict); returns an ImportReport.

        Checked whole first, then written in one transaction: a malformed file changes nothing. ``model`` /
        ``embedding`` replace the file's for every agent (needed when letta_nb cannot run the file's, e.g.
        ``model="offline"``). ``name`` renames the file's first agent, ``suffix`` is appended to every agent's
        name (an existing name is an error). Custom tools are stored untrusted and sandboxed; a stored tool of
        the same name is reused if identical, else an error unless ``existing_tools="keep"``."""
        return await _agentfile.import_agent_file(
            self._rt, path_or_bytes, model=model, embedding=embedding, name=name, suffix=suffix,
            existing_tools=existing_tools, max_steps=max_steps)

    async def _export_file(self, agent: AgentRef, path: str | os.PathLike[str] | None = None) -> Any:
        """The agent as a Letta Agent File (with the rest of its sleep-time group, if imported with one): a dict,
        or written to ``path`` (returns the path). Never holds an API key."""
        return await _agentfile.export_agent_file(self._rt, await _lookup.agent_id(self._rt, agent_ref(agent)), path)

    create, acreate = sync_twin(_create), async_twin(_create)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    update, aupdate = sync_twin(_update), async_twin(_update)
    modify, amodify = update, aupdate  # letta_client spells it "modify"
    import_file, aimport_file = sync_twin(_import_file), async_twin(_import_file)
    export_file, aexport_file = sync_twin(_export_file), async_twin(_export_file)
    list, alist = sync_twin(_list), async_twin(_list)
    delete, adelete = sync_twin(_delete), async_twin(_delete)


class Tools(_Resource):
    """User tools: plain Python functions whose schema comes from signature and docstring."""

    async def _upsert_from_function(self, func: Callable[..., Any], *, name: str | None = None,
                                    parallel_safe: bool = False, sandbox: bool | str = False,
                                    timeout: float | None = 30.0, network: bool = False) -> ToolSpec:
        """Register ``func`` as a tool (or replace the tool of that name). ``sandbox=True`` runs it in the
        sandbox (isolated where this machine allows: ``letta_nb.runtime.sandbox.capabilities()``),
        ``"strict"`` only where it is isolated; ``network=True`` lets a sandboxed tool use the network."""
        func = function_arg(func)
        name, timeout = tool_name_arg(name), timeout_arg(timeout)
        parallel_safe = flag(parallel_safe, "parallel_safe")
        return await _tools.register(self._rt, func, name=name, parallel_safe=parallel_safe, sandbox=sandbox,
                                     timeout=timeout, network=network)

    async def _list(self) -> list[str]:
        """The names of every tool: the base tools and those registered in this store."""
        return await _tools.names(self._rt)

    async def _retrieve(self, name: str) -> ToolSpec:
        """A tool's spec: its schema, isolation and ``.source`` (reading it never runs it)."""
        return await _tools.spec(self._rt, tool_ref(name))

    async def _trust(self, name: str) -> ToolSpec:
        """Let a stored tool that you did not register (a shared store, an imported agent) run as stored.

        Such a tool runs only in the strict sandbox, without network, until you re-register it or trust
        it: read its source first (``client.tools.trust`` returns the spec; ``.source`` is the code)."""
        return await _tools.trust(self._rt, tool_ref(name))

    upsert_from_function = sync_twin(_upsert_from_function)
    aupsert_from_function = async_twin(_upsert_from_function)
    list, alist = sync_twin(_list), async_twin(_list)
    retrieve, aretrieve = sync_twin(_retrieve), async_twin(_retrieve)
    trust, atrust = sync_twin(_trust), async_twin(_trust)


class Client:
    """A connection to an in-process letta_nb runtime. Use :func:`connect`."""

    def __init__(self, where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float | None = None,
                 lease_timeout: float | None = None, settings: Settings | None = None):
        keys = checked_api_keys(api_keys)
        where = store_where(where)
        if settings is None:  # connect() resolves them; a Client made directly does the same
            settings = resolve_settings({"lease_ttl": lease_ttl, "lease_timeout": lease_timeout})
        self._thread = RuntimeThread()
        try:
            self._runtime: Runtime = self._thread.run(Runtime.open(
                where, lease_ttl=settings.lease_ttl, lease_timeout=settings.lease_timeout, settings=settings))
        except BaseException:
            self._thread.close()
            raise
        self._runtime.api_keys.update(keys)  # memory only: never stored, logged or shown
        self._thread.close_at_exit(self._runtime.close)  # a script that never calls close() still closes cleanly
        self.agents = Agents(self)
        self.tools = Tools(self)

    @property
    def runtime(self) -> Runtime:
        """The runtime behind this client, for probes and benchmarks: internals, not a stable API."""
        return self._runtime

    async def _query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one read-only SQL statement on the store; a pandas DataFrame of its rows.

        The safe way to look into the store while this client has it open: it goes through the runtime's
        own sqlite3 module (a ``sqlite3.connect(path)`` of another SQLite library in the same process can
        break the runtime's locks). ``params`` fill ``?`` (a list) or ``:name`` (a dict). Writes, bad SQL
        and bad params raise InvalidArgumentError with SQLite's message; change data through the API.
        ``client.query("SELECT name, sql FROM sqlite_master")`` lists the tables and their columns."""
        return await _store_info.query(self._runtime, sql, params)

    @property
    def store_location(self) -> str:
        """Where the store is: a path, ``:memory:`` or a URL without its password."""
        return _store_info.location(self._runtime)

    def close(self) -> None:
        """Finish running turns, close the store and stop the runtime thread. Idempotent."""
        if self._thread.closed:
            return
        try:
            self._thread.run(self._runtime.close())
        finally:
            self._thread.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._thread.closed else "open"
        return f"<letta_nb.Client {state} store={self.store_location!r}>"

    query, aquery = sync_twin(_query), async_twin(_query)


def connect(where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float | None = None,
            lease_timeout: float | None = None, default_model: str | None = None, default_embedding: str | None = None,
            allowed_providers: Sequence[str] | None = None) -> Client:
    """Open (or create) a store and start the runtime: a path, ``":memory:"``, or a URL; default
    ``$LETTA_NB_HOME/letta_nb.db`` (``~/.letta_nb``).

    ``api_keys`` maps a provider (``"openai"``, ``"ollama"``) to its key, for when the environment
    (``OPENAI_API_KEY``) should not hold it; keys stay in this process's memory only.

    The other arguments are settings (letta_nb/settings.py; README "Settings"): one left out (None) comes from
    its ``LETTA_NB_*`` environment variable, else the user's config file, else a site config file, else its
    default; ``client.runtime.settings`` holds the result and ``%letta config`` shows where each came from.
    Several processes (notebooks) may use one store: each turn holds its agent's lease. ``lease_ttl``: seconds
    a lease outlives a process that stopped renewing it (killed, paused; default 30); ``lease_timeout``: seconds
    a turn waits for another process's turn of the same agent before ``AgentBusyError`` (default 120).
    ``default_model``/``default_embedding``: what ``agents.create`` uses when not told (``"offline"``,
    ``"hash"``); ``allowed_providers``: the only providers models and embedders may use (e.g.
    ``["offline", "hash", "openai"]``; default all)."""
    settings = resolve_settings({"lease_ttl": lease_ttl, "lease_timeout": lease_timeout,
                                 "default_model": default_model, "default_embedding": default_embedding,
                                 "allowed_providers": allowed_providers})
    return Client(where, api_keys=api_keys, settings=settings)
