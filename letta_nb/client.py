"""The public Python API, shaped like ``letta_client`` (``client.agents.messages.create`` ...).

One design, two surfaces: each operation is written once as an ``async def _name`` that runs on the
runtime loop; :func:`_twins` derives the blocking ``name`` (submits and waits; Ctrl-C cancels cleanly)
and the awaitable ``aname`` (usable with top-level ``await`` in a cell or inside any event loop). A
parity test checks every sync method has its async twin with the same signature.

Agents can be named by id, by name or by the AgentState itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import inspect
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from letta_nb._client_args import (
    agent_name,
    agent_ref,
    block_label,
    check_block_value,
    checked_api_keys,
    flag,
    input_text,
    memory_blocks_from,
    metadata_arg,
    optional_text,
    positive_int,
    store_where,
    tags_arg,
    text_arg,
    timeout_arg,
    tool_name_arg,
)
from letta_nb.embeddings.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, ChunkSettings
from letta_nb.embeddings.ingest import DEFAULT_MAX_FILE_MB, ingest
from letta_nb.embeddings.ingest_report import IngestReport, UploadedFile
from letta_nb.errors import InvalidArgumentError, TurnCancelledError, UploadedFileNotFoundError
from letta_nb.runtime import trust
from letta_nb.runtime.agent_loop import run_turn
from letta_nb.runtime.leases import check_settings as check_lease_settings
from letta_nb.runtime.base_tools import BASE_TOOL_NAMES
from letta_nb.runtime.events import StreamEvent
from letta_nb.runtime.loop_thread import Job, RuntimeThread, wait_interruptibly
from letta_nb.runtime.memory import DEFAULT_SYSTEM
from letta_nb.runtime.runtime import Runtime
from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import AgentState, Block, Message, Passage, Response
from letta_nb.store.files import delete_file, file_records
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.store import passage_from_row

__all__ = ["Client", "connect"]

_MAX_ROWS = 1_000_000_000  # a row count SQLite's 64-bit integers hold with room to spare
_MAX_TOP_K = 10_000


def _twins(cls: type) -> type:
    """For each ``async def _op`` (public ops only, listed in ``cls._ops``) add ``op`` and ``aop``."""
    for op in cls._ops:
        impl = getattr(cls, f"_{op}")

        def sync(self: Any, *args: Any, __impl: Callable = impl, **kwargs: Any) -> Any:
            return self._thread.run(__impl(self, *args, **kwargs))

        async def async_(self: Any, *args: Any, __impl: Callable = impl, **kwargs: Any) -> Any:
            return await self._thread.run_async(__impl(self, *args, **kwargs))

        for fn, name in ((sync, op), (async_, f"a{op}")):
            functools.update_wrapper(fn, impl)
            fn.__name__ = fn.__qualname__ = name
            fn.__signature__ = inspect.signature(impl)  # type: ignore[attr-defined]
            del fn.__wrapped__
            setattr(cls, name, fn)
    return cls


class _Resource:
    _ops: tuple[str, ...] = ()

    def __init__(self, client: Client):
        self._client = client
        self._thread = client._thread

    @property
    def _rt(self) -> Runtime:
        return self._client._runtime

    async def _agent_id(self, agent: Any) -> str:
        return await self._rt.resolve_agent(agent_ref(agent))

    async def _agent(self, agent: Any) -> AgentState:
        agent_id = await self._agent_id(agent)
        return (await self._rt.session(agent_id)).agent


@_twins
class Messages(_Resource):
    """Send messages to an agent and read its recall memory."""

    _ops = ("create", "list", "cancel")

    async def _create(self, agent: Any, input: str | None = None, *, messages: list[dict] | None = None) -> Response:
        """Send ``input`` (or letta_client-style ``messages=[{"role": "user", "content": ...}]``); returns a Response."""
        return await self._turn(agent, input, messages)

    async def _list(self, agent: Any, *, limit: int | None = None) -> list[Message]:
        """Recall memory, oldest first (the newest ``limit`` when given)."""
        agent_id = await self._agent_id(agent)
        if limit is not None:
            positive_int(limit, "limit", hi=_MAX_ROWS)
            return list(reversed(await self._rt.store.load_messages(agent_id, limit=limit, newest_first=True)))
        return await self._rt.store.load_messages(agent_id)

    async def _cancel(self, agent: Any) -> bool:
        """Cancel the agent's running turn (what it streamed so far is kept). False if none was running.

        A ``create`` waiting for that turn raises :class:`~letta_nb.errors.TurnCancelledError` (its
        ``.response`` is the partial turn); a stream ends with a ``cancelled`` StopEvent."""
        return self._rt.cancel_turn(await self._agent_id(agent))

    def stream(self, agent: Any, input: str | None = None, *, messages: list[dict] | None = None) -> Iterator[StreamEvent]:
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

    async def astream(self, agent: Any, input: str | None = None, *, messages: list[dict] | None = None) -> AsyncIterator[StreamEvent]:
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

    def _start_stream(self, agent: Any, input: Any, messages: Any, put: Callable[[Any], None], done: object) -> Job:
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


def _stream_ended(item: Any, done: object) -> bool:
    """The stream protocol of ``_start_stream``: ``done`` or a cancellation ends it, an error is raised."""
    if item is done or isinstance(item, (asyncio.CancelledError, TurnCancelledError)):
        return True
    if isinstance(item, BaseException):
        raise item
    return False


@_twins
class Blocks(_Resource):
    """Core-memory blocks of an agent."""

    _ops = ("list", "retrieve", "update")

    async def _list(self, agent: Any) -> list[Block]:
        return list((await self._agent(agent)).blocks)

    async def _retrieve(self, agent: Any, label: str) -> Block:
        label = block_label(label)
        return (await self._agent(agent)).block(label)

    async def _update(self, agent: Any, label: str, *, value: str | None = None, limit: int | None = None,
                      description: str | None = None, read_only: bool | None = None) -> Block:
        """Change a block. A value over the limit raises BlockLimitError and changes nothing."""
        label, description = block_label(label), optional_text(description, "description")
        read_only = None if read_only is None else flag(read_only, "read_only")
        async with self._rt.agent_change(agent) as (state, token):
            block = state.block(label)
            new_value = block.value if value is None else value
            new_limit = block.limit if limit is None else limit
            new_value = check_block_value(label, new_value, new_limit)
            changes = {"value": new_value, "char_limit": new_limit}
            if description is not None:
                changes["description"] = description
            if read_only is not None:
                changes["read_only"] = bool(read_only)
            await self._rt.store.update_block(state.id, label, token, **changes)
        return (await self._agent(state.id)).block(label)


Blocks.modify, Blocks.amodify = Blocks.update, Blocks.aupdate  # letta_client spells it "modify"


@_twins
class Passages(_Resource):
    """Archival memory of an agent."""

    _ops = ("create", "list", "search", "delete")

    async def _create(self, agent: Any, text: str, *, tags: list[str] | None = None) -> Passage:
        text, tags = text_arg(text, "text"), tags_arg(tags)
        return await self._rt.archival.insert(await self._agent(agent), text, tags)

    async def _list(self, agent: Any) -> list[Passage]:
        state = await self._agent(agent)
        return [passage_from_row(r) for r in await self._rt.store.passage_rows(state.id)]

    async def _search(self, agent: Any, query: str, *, top_k: int = 5, tags: list[str] | None = None,
                      tag_match_mode: str = "any", start_datetime: Any = None,
                      end_datetime: Any = None) -> list[Passage]:
        """Closest passages by meaning; ``start_datetime``/``end_datetime`` (datetime or ISO string) bound creation time."""
        query, tags = text_arg(query, "query"), tags_arg(tags)
        positive_int(top_k, "top_k", hi=_MAX_TOP_K, hint=" For every passage use passages.list(agent).")
        if tag_match_mode not in ("any", "all"):
            raise InvalidArgumentError(f"tag_match_mode must be 'any' or 'all', got {tag_match_mode!r}")
        return await self._rt.archival.search(await self._agent(agent), query, top_k=top_k, tags=tags,
                                              tag_match_mode=tag_match_mode, start_datetime=start_datetime,
                                              end_datetime=end_datetime)

    async def _delete(self, agent: Any, passage_id: str) -> None:
        passage_id = text_arg(passage_id, "passage_id")
        state = await self._agent(agent)
        if not await self._rt.store.delete_passage(state.id, passage_id):
            raise InvalidArgumentError(f"agent {state.name!r} has no passage {passage_id!r}")


@_twins
class Files(_Resource):
    """Files uploaded to an agent's archival memory: chunked by type, embedded, stored; re-uploads are idempotent."""

    _ops = ("upload", "list", "delete")

    async def _upload(self, agent: Any, path_or_paths: Any, *, chunk_size: int | None = None,
                      chunk_overlap: int | None = None, progress: bool = True,
                      max_file_mb: float = DEFAULT_MAX_FILE_MB) -> IngestReport:
        """Upload files and directories (walked for known file types; symlinked directories inside are not
        followed). Unchanged files are ``unchanged``, changed ones replaced; a file that cannot be read or
        fails is an ``error`` row and the rest go on; a file with no text is a ``skipped`` row."""
        state = await self._agent(agent)
        settings = ChunkSettings(DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                                 DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap)
        return await ingest(self._rt.store, self._rt.agent_embedder(state), state, path_or_paths,
                            settings=settings, progress=progress, max_file_mb=max_file_mb)

    async def _list(self, agent: Any) -> list[UploadedFile]:
        state = await self._agent(agent)
        return [UploadedFile(r.path, r.content_hash, r.size_bytes, r.chunks, r.chunking,
                             r.updated_at.replace(tzinfo=r.updated_at.tzinfo or dt.timezone.utc))
                for r in (await file_records(self._rt.store, state.id)).values()]

    async def _delete(self, agent: Any, path: str) -> int:
        """Remove a file's passages and record; returns how many passages were removed."""
        path = text_arg(path, "path")
        state = await self._agent(agent)
        known = list(await file_records(self._rt.store, state.id))
        wanted = path if path in known else str(Path(path).expanduser().resolve())
        removed = await delete_file(self._rt.store, state.id, wanted)
        if removed is None:
            raise UploadedFileNotFoundError(path, known, hint="See client.agents.files.list(agent).")
        return removed


@_twins
class AgentTools(_Resource):
    """Which tools an agent may call."""

    _ops = ("list", "attach", "detach")

    async def _list(self, agent: Any) -> list[str]:
        return list((await self._agent(agent)).tools)

    async def _attach(self, agent: Any, tool: Any) -> list[str]:
        name = await self._client.tools._resolve(tool)
        async with self._rt.agent_change(agent) as (state, token):  # two attaches at once: neither is lost
            await self._rt.store.set_agent_tools(state.id, [*state.tools, name], token)
        return (await self._agent(state.id)).tools

    async def _detach(self, agent: Any, tool: str) -> list[str]:
        async with self._rt.agent_change(agent) as (state, token):
            if tool not in state.tools:
                raise InvalidArgumentError(f"agent {state.name!r} has no tool {tool!r}; it has {state.tools}")
            await self._rt.store.set_agent_tools(state.id, [t for t in state.tools if t != tool], token)
        return (await self._agent(state.id)).tools


@_twins
class Agents(_Resource):
    """Create, find and delete agents; ``.messages``, ``.blocks``, ``.passages``, ``.tools`` per agent."""

    _ops = ("create", "retrieve", "update", "list", "delete")

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
        model: str = "offline",
        embedding: str = "hash",
        memory_blocks: list[dict[str, Any] | Block] | None = None,
        tools: list[Any] = (),
        system: str | None = None,
        max_steps: int = 10,
        include_base_tools: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> AgentState:
        """Create an agent. ``tools`` may hold Python functions (registered on the fly) or tool names."""
        name = agent_name(name if name is not None else f"agent-{new_id('x')[2:10]}")
        positive_int(max_steps, "max_steps", hi=100)
        system, metadata = optional_text(system, "system"), metadata_arg(metadata)
        include_base_tools = flag(include_base_tools, "include_base_tools")
        if isinstance(tools, str) or not isinstance(tools, list | tuple):
            raise InvalidArgumentError(f"tools must be a list of functions or tool names, got {type(tools).__name__}")
        self._rt.llm(model)  # validates the model name before anything is written
        self._rt.embedder(embedding)
        blocks = memory_blocks_from(memory_blocks)
        await self._rt.store.ensure_name_free(name)
        for tool in tools:  # check every named tool before registering any function: all or nothing
            if isinstance(tool, str):
                await self._rt.tool_spec(tool)
            elif not callable(tool):
                raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")
        tool_names = list(BASE_TOOL_NAMES) if include_base_tools else []
        for tool in tools:
            tool_name = await self._client.tools._resolve(tool)
            if tool_name not in tool_names:
                tool_names.append(tool_name)
        agent_id = new_id("agent")
        state = AgentState(
            id=agent_id, name=name, model=model, embedding=embedding, system=system or DEFAULT_SYSTEM,
            blocks=blocks, tools=tool_names, max_steps=max_steps, created_at=utcnow(), metadata=dict(metadata or {}),
            signature=trust.sign("agent", trust.agent_fields(agent_id, model, embedding)),
        )
        await self._rt.store.insert_agent(state)
        return (await self._rt.session(state.id)).agent

    async def _retrieve(self, agent: Any) -> AgentState:
        return await self._agent(agent)

    async def _update(self, agent: Any, *, model: str | None = None, embedding: str | None = None,
                      system: str | None = None, max_steps: int | None = None,
                      metadata: dict[str, Any] | None = None) -> AgentState:
        """Change an agent's settings (between turns). Setting ``model``/``embedding`` also makes them
        yours: API keys go to an endpoint a spec names only if you wrote that spec (see runtime/trust.py)."""
        state = await self._agent(agent)
        max_steps = None if max_steps is None else positive_int(max_steps, "max_steps", hi=100)
        system = optional_text(system, "system")
        metadata = None if metadata is None else metadata_arg(metadata)
        new_model = state.model if model is None else model
        new_embedding = state.embedding if embedding is None else embedding
        self._rt.llm(new_model)  # both validated before anything is written
        self._rt.embedder(new_embedding)
        changes: dict[str, Any] = {"model": new_model, "embedding": new_embedding,
                                   "signature": trust.sign("agent", trust.agent_fields(state.id, new_model, new_embedding))}
        for key, value in (("system", system), ("max_steps", max_steps), ("metadata", metadata)):
            if value is not None:
                changes[key] = value
        async with self._rt.agent_change(state.id) as (_, token):
            await self._rt.store.update_agent(state.id, token, **changes)
        return await self._agent(state.id)

    async def _list(self) -> list[AgentState]:
        return await self._rt.store.list_agents()

    async def _delete(self, agent: Any) -> None:
        async with self._rt.agent_change(await self._agent_id(agent)) as (state, token):
            await self._rt.store.delete_agent(state.id, token)


Agents.modify, Agents.amodify = Agents.update, Agents.aupdate  # letta_client spells it "modify"


@_twins
class Tools(_Resource):
    """User tools: plain Python functions whose schema comes from signature and docstring."""

    _ops = ("upsert_from_function", "list", "retrieve", "trust")

    async def _upsert_from_function(self, func: Callable[..., Any], *, name: str | None = None,
                                    parallel_safe: bool = False, sandbox: bool | str = False,
                                    timeout: float | None = 30.0, network: bool = False) -> ToolSpec:
        """Register ``func`` as a tool (or replace the tool of that name). ``sandbox=True`` runs it in the
        sandbox (isolated where this machine allows: ``letta_nb.runtime.sandbox.capabilities()``),
        ``"strict"`` only where it is isolated; ``network=True`` lets a sandboxed tool use the network."""
        if not callable(func):
            raise InvalidArgumentError(f"func must be a Python function, got {type(func).__name__}")
        name, timeout = tool_name_arg(name), timeout_arg(timeout)
        parallel_safe = flag(parallel_safe, "parallel_safe")
        return await self._rt.register_tool(func, name=name, parallel_safe=parallel_safe, sandbox=sandbox,
                                            timeout=timeout, network=network)

    async def _list(self) -> list[str]:
        return await self._rt.tool_names()

    async def _retrieve(self, name: str) -> ToolSpec:
        """A tool's spec: its schema, isolation and ``.source`` (reading it never runs it)."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a tool name, got {name!r}")
        return await self._rt.tool_spec(name)

    async def _trust(self, name: str) -> ToolSpec:
        """Let a stored tool that you did not register (a shared store, an imported agent) run as stored.

        Such a tool runs only in the strict sandbox, without network, until you re-register it or trust
        it: read its source first (``client.tools.trust`` returns the spec; ``.source`` is the code)."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a tool name, got {name!r}")
        return await self._rt.trust_tool(name)

    async def _resolve(self, tool: Any) -> str:
        if isinstance(tool, ToolSpec):
            return (await self._rt.register_tool(tool)).name
        if callable(tool):
            return (await self._rt.register_tool(tool)).name
        if isinstance(tool, str):
            return (await self._rt.tool_spec(tool)).name
        raise InvalidArgumentError(f"a tool must be a function, a ToolSpec or a tool name, got {tool!r}")


@_twins
class Client:
    """A connection to an in-process letta_nb runtime. Use :func:`connect`."""

    _ops = ("query",)

    def __init__(self, where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float = 30.0,
                 lease_timeout: float = 120.0):
        keys = checked_api_keys(api_keys)
        where = store_where(where)
        check_lease_settings(lease_ttl, lease_timeout)
        self._thread = RuntimeThread()
        try:
            self._runtime: Runtime = self._thread.run(
                Runtime.open(where, lease_ttl=lease_ttl, lease_timeout=lease_timeout))
        except BaseException:
            self._thread.close()
            raise
        self._runtime.api_keys.update(keys)  # memory only: never stored, logged or shown
        self._thread.close_at_exit(self._runtime.close)  # a script that never calls close() still closes cleanly
        self.agents = Agents(self)
        self.tools = Tools(self)

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    async def _query(self, sql: str, params: Any = None) -> Any:
        """Run one read-only SQL statement on the store; a pandas DataFrame of its rows.

        The safe way to look into the store while this client has it open: it goes through the runtime's
        own sqlite3 module (a ``sqlite3.connect(path)`` of another SQLite library in the same process can
        break the runtime's locks). ``params`` fill ``?`` (a list) or ``:name`` (a dict). Writes, bad SQL
        and bad params raise InvalidArgumentError with SQLite's message; change data through the API.
        ``client.query("SELECT name, sql FROM sqlite_master")`` lists the tables and their columns."""
        columns, rows = await self._runtime.store.query(sql, params)
        import pandas as pd

        return pd.DataFrame.from_records(rows, columns=columns)

    @property
    def store_location(self) -> str:
        return self._runtime.store.location.display

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


def connect(where: Any = None, *, api_keys: dict[str, str] | None = None, lease_ttl: float = 30.0,
            lease_timeout: float = 120.0) -> Client:
    """Open (or create) a store and start the runtime: a path, ``":memory:"``, or a URL; default ~/.letta_nb.

    ``api_keys`` maps a provider (``"openai"``, ``"ollama"``) to its key, for when the environment
    (``OPENAI_API_KEY``) should not hold it; keys stay in this process's memory only.

    Several processes (notebooks) may use one store: each turn holds its agent's lease. ``lease_ttl``: seconds
    a lease outlives a process that stopped renewing it (killed, paused); ``lease_timeout``: seconds a turn
    waits for another process's turn of the same agent before ``AgentBusyError``."""
    return Client(where, api_keys=api_keys, lease_ttl=lease_ttl, lease_timeout=lease_timeout)
