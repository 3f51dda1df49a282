"""The runtime: every in-kernel service an agent needs, living on the runtime event loop.

It owns the store, the per-agent locks, the named caches (``agent_state``, ``model_config``,
``embedding_config``, ``tool_schemas``), the tool executor, the in-process tool registry and the
record of tool calls and steps. All its coroutines must run on the runtime loop (see
:mod:`letta_nb.runtime.loop_thread`); the public client submits to it.

Tools: a user tool is registered from a Python function; its schema and source are stored so another
kernel can re-create it from source. An agent's tools are looked up by name, base tools first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from letta_nb.embeddings.registry import resolve_embedder
from letta_nb.errors import AgentNotFoundError, InvalidArgumentError, ToolNotFoundError
from letta_nb.llm.base import LLMClient
from letta_nb.llm.registry import resolve_model
from letta_nb.runtime import trust
from letta_nb.runtime.archival import Archival
from letta_nb.runtime.base_tools import BASE_TOOL_NAMES, BASE_TOOLS
from letta_nb.runtime.cache import CacheRegistry, TTLCache
from letta_nb.runtime.executor import ToolExecutor, ToolResult
from letta_nb.runtime.leases import Lease, make_leases
from letta_nb.runtime.locks import TURN_TASK, AgentLocks
from letta_nb.runtime.session import AgentSession
from letta_nb.runtime.tool_schema import ToolSpec, tool_from_function
from letta_nb.schemas import AgentState, StepStats
from letta_nb.settings import Settings
from letta_nb.settings import current as current_settings
from letta_nb.store.records import ToolRecord
from letta_nb.store.store import Store
from letta_nb.telemetry import Telemetry
from letta_nb.telemetry.providers import otlp_settings

__all__ = ["Runtime", "ToolCallRecord", "current_agent"]

# Set by the agent loop for the duration of a turn (each turn is its own task, so its own context),
# so tool-call records know their agent without threading it through the executor.
current_agent: contextvars.ContextVar[str] = contextvars.ContextVar("letta_nb_current_agent")


@dataclasses.dataclass(frozen=True)
class ToolCallRecord:
    agent_id: str
    name: str
    status: str
    duration_ms: float
    started_at: float
    error_type: str | None


class Runtime:
    def __init__(self, store: Store, *, max_parallel_tools: int = 8, history: int = 100_000,
                 lease_ttl: float = 30.0, lease_timeout: float = 120.0, settings: Settings | None = None,
                 redis_url: str | None = None):
        self.store = store
        self.settings = settings if settings is not None else current_settings()  # letta_nb/settings.py
        # lease rows, or Redis fenced by them (runtime/redis_leases.py)
        self.leases = make_leases(store, redis_url, ttl=lease_ttl, timeout=lease_timeout)
        self._tools_version: int | None = None  # the store's tools counter our tool caches reflect
        self.caches = CacheRegistry()
        # Sized for a kernel serving thousands of agents: past it every turn reloads its session from the store
        # (bench concurrency, 600 agents x 3: 60x ideal at 512, 3.7 ms of CPU a turn, against 4.8x at 500).
        self.agent_cache: TTLCache[str, AgentSession] = self.caches.cache("agent_state", maxsize=4096)
        self.model_cache = self.caches.cache("model_config", maxsize=64)
        self.embedding_cache = self.caches.cache("embedding_config", maxsize=16)
        self.tool_cache: TTLCache[str, ToolSpec] = self.caches.cache("tool_schemas", maxsize=2048)
        self.telemetry = Telemetry(self)  # cheap records per step; OpenTelemetry fed on read (see recorder)
        self.telemetry.watch_pool(store.engine)
        self.telemetry.watch_caches(self.caches)
        self.locks = AgentLocks(on_wait=self.telemetry.on_lock_wait)
        self.tool_calls: collections.deque[ToolCallRecord] = collections.deque(maxlen=history)
        self.executor = ToolExecutor(max_parallel=max_parallel_tools, on_result=self._record_tool)
        self.archival = Archival(store, self.agent_embedder)
        self.running: dict[str, asyncio.Task[Any]] = {}
        self._stops: dict[str, asyncio.Task[Any]] = {}  # agent -> its turn's task that cancel_turn() stopped
        self._user_tools: dict[str, ToolSpec] = {}
        self._unverified: set[str] = set()  # registrations another process may have replaced since
        self._http: Any = None  # the one httpx.AsyncClient for every model and embedder (see http_client)
        self.api_keys: dict[str, str] = {}  # provider -> key, in memory only (never stored or shown)

    @classmethod
    async def open(cls, where: Any = None, **kwargs: Any) -> Runtime:
        otlp_settings()  # a broken OTLP setup fails here, before a store is opened (and leaked)
        store = await Store.open(where)
        try:
            runtime = cls(store, **kwargs)
            await runtime.leases.start()  # Redis: reachable now, or an error naming it
        except BaseException:
            await store.close()
            raise
        return runtime

    async def close(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        if self.running:
            await asyncio.gather(*self.running.values(), return_exceptions=True)
        await self.leases.close()
        await self.executor.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self.store.close()
        self.telemetry.close()

    def cancel_turn(self, agent_id: str) -> bool:
        """Stop the agent's running turn (``messages.cancel``); False if none is running. Idempotent."""
        task = self.running.get(agent_id)
        if task is None or task.done():
            return False
        if self._stops.get(agent_id) is not task:  # once: a second cancel() must not cancel the save
            self._stops[agent_id] = task
            task.cancel()
        return True

    def stop_requested(self, agent_id: str, task: asyncio.Task[Any], *, clear: bool = False) -> bool:
        """Whether :meth:`cancel_turn` stopped ``task``'s turn of this agent (``clear`` forgets it)."""
        requested = self._stops.get(agent_id) is task
        if requested and clear:
            del self._stops[agent_id]
        return requested

    # ---- models and embedders (cached: resolving parses specs and builds clients) -----------------
    def http_client(self) -> Any:
        """The shared ``httpx.AsyncClient``, made on first use (on the runtime loop), closed by :meth:`close`."""
        if self._http is None:
            from letta_nb._http import make_http_client

            self._http = make_http_client()
        return self._http

    def llm(self, model: str, *, trusted: bool = True) -> LLMClient:
        """The client for a model spec; ``trusted=False`` for a spec this user did not write (no key goes
        to an endpoint of its own: see runtime/trust.py)."""
        self.settings.check_provider(model, "model")  # allowed_providers, checked on every use
        key = model if trusted else f"untrusted:{model}"
        client = self.model_cache.get(key)
        if client is None:
            client = resolve_model(model, self.http_client, self.api_keys, trusted=trusted)
            self.model_cache.set(key, client)
        return client

    def embedder(self, name: str, *, trusted: bool = True) -> Any:
        """The embedder for a spec (``trusted`` as for :meth:`llm`)."""
        self.settings.check_provider(name, "embedding")
        key = name if trusted else f"untrusted:{name}"
        embedder = self.embedding_cache.get(key)
        if embedder is None:
            embedder = resolve_embedder(name, self.http_client, self.api_keys, trusted=trusted)
            if hasattr(embedder, "on_batch"):  # batching embedders report each request (probes.embedder())
                embedder.on_batch = self.telemetry.on_embed_batch
            self.embedding_cache.set(key, embedder)
        return embedder

    def agent_embedder(self, agent: AgentState) -> Any:
        """The agent's embedder, with keys only for endpoints this user configured (see :meth:`llm`)."""
        return self.embedder(agent.embedding, trusted=_wrote(agent))

    # ---- tools ------------------------------------------------------------------------------------
    async def register_tool(self, func: Callable[..., Any] | ToolSpec, **options: Any) -> ToolSpec:
        spec = func if isinstance(func, ToolSpec) else tool_from_function(func, **options)
        if spec.name in BASE_TOOLS:
            raise InvalidArgumentError(f"{spec.name!r} is a base tool name; give your function another name.")
        await self.store.upsert_tool(_signed(tool_record(spec)))
        self._user_tools[spec.name] = spec
        self._forget_tool(spec.name)
        return spec

    def forget_tool(self, name: str) -> None:
        """A tool was deleted (services/tools.py): drop this process's registration and the caches holding it."""
        self._user_tools.pop(name, None)
        self._forget_tool(name)

    def _forget_tool(self, name: str) -> None:
        self.tool_cache.invalidate(name)
        # Sessions hold resolved tools: drop those of agents using this tool so they pick it up.
        self.agent_cache.clear()

    async def tool_spec(self, name: str) -> ToolSpec:
        if name in BASE_TOOLS:
            return BASE_TOOLS[name]
        if name in self._unverified:
            self._unverified.discard(name)
            stored = {t.name: t for t in await self.store.tool_rows()}.get(name)
            if stored is None or trust.tool_fields(stored) != trust.tool_fields(tool_record(self._user_tools[name])):
                del self._user_tools[name]  # replaced (or deleted) by another process: the store's wins
        if name in self._user_tools:
            return self._user_tools[name]

        async def load() -> ToolSpec:
            stored = {t.name: t for t in await self.store.tool_rows()}
            if name not in stored:
                raise ToolNotFoundError(name, [*BASE_TOOL_NAMES, *stored])
            return tool_from_record(stored[name])

        return await self.tool_cache.get_or_load(name, load)

    async def trust_tool(self, name: str) -> ToolSpec:
        """Sign the stored tool ``name`` as this user's (after reading its source): it then runs as stored."""
        if name in BASE_TOOLS:
            raise InvalidArgumentError(f"{name!r} is a base tool: it is part of letta_nb and always trusted.")
        stored = {t.name: t for t in await self.store.tool_rows()}
        if name not in stored:
            raise ToolNotFoundError(name, [*BASE_TOOL_NAMES, *stored])
        await self.store.upsert_tool(_signed(stored[name]))
        self._forget_tool(name)
        return await self.tool_spec(name)

    async def tool_names(self) -> list[str]:
        return [*BASE_TOOL_NAMES, *sorted({t.name for t in await self.store.tool_rows()} | set(self._user_tools))]

    def _record_tool(self, result: ToolResult) -> None:
        agent = current_agent.get(None)
        record = ToolCallRecord(agent or "", result.name, result.status, result.duration_ms,
                                result.started_at, result.error_type)
        self.tool_calls.append(record)
        self.telemetry.on_tool(record)

    def record_step(self, agent: AgentState, stats: StepStats, ttft_ms: float | None = None) -> None:
        self.telemetry.on_step(agent.id, agent.model, stats, ttft_ms)

    # ---- agents -----------------------------------------------------------------------------------
    async def resolve_agent(self, ref: Any) -> str:
        if not isinstance(ref, str):
            ref = getattr(ref, "id", ref)
        if not isinstance(ref, str) or not ref:
            raise InvalidArgumentError(f"agent must be an agent name, id or AgentState, got {ref!r}")
        if ref in self.agent_cache:  # a membership test: resolving a name must not count as a cache miss
            return ref
        return await self.store.resolve_agent(ref)

    async def session(self, agent_id: str, state: tuple[int, int, int] | None = None) -> AgentSession:
        """The agent's loaded state (cached); everything a turn reads comes from here.

        Another process may have changed the agent since it was cached: its ``(last_seq, version,
        tools_version)`` row (``state``, when a lease grant just read it; else read now, ~20 us) decides
        whether the cached session is still the store's."""
        if state is None:
            read = self.store.writer.read(functools.partial(self.store.lease_rows.agent_state, agent_id=agent_id))
            state = await read if inspect.isawaitable(read) else read  # awaitable on PostgreSQL
            if state is None:
                self.invalidate_agent(agent_id)
                raise AgentNotFoundError(agent_id, list(await self.store.agent_names()))
        if state[2] != self._tools_version:
            self._tools_changed(state[2])
        cached = self.agent_cache.peek(agent_id)
        if cached is not None and (cached.agent.last_seq, cached.agent.version) != (state[0], state[1]):
            self.invalidate_agent(agent_id)

        async def load() -> AgentSession:
            agent, messages = await self.store.load_session(agent_id)
            tools = {name: await self.tool_spec(name) for name in _ordered_tools(agent.tools)}
            return AgentSession(agent=agent, llm=self.llm(agent.model, trusted=_wrote(agent)), tools=tools,
                                messages=messages)

        return await self.agent_cache.get_or_load(agent_id, load)

    def session_is_current(self, session: AgentSession, state: tuple[int, int, int]) -> bool:
        """Whether ``session`` is still the store's for the agent's ``(last_seq, version, tools_version)``
        row: what :meth:`session` would hand out again for that state (a turn that started before its lease's
        read was back asks this of the read's answer, agent_loop.py ``_Turn.confirm``)."""
        return state[2] == self._tools_version and (session.agent.last_seq, session.agent.version) == state[:2]

    @contextlib.asynccontextmanager
    async def agent_lease(self, agent: Any, *, join_turn: bool = False) -> AsyncIterator[Lease]:
        """The one path for every change to an agent outside a step commit: its lock in this process, its
        lease across processes. Hold it only around the commit (prepare first: embed, chunk) and fence the
        commit with ``lease.token``; a refused commit forgets the lease (runtime/leases.py).

        ``join_turn``: the change touches nothing a running turn holds in memory (passages, files), so a tool
        of the agent's own running turn joins that turn's lease instead of waiting for its own turn to end
        (elsewhere this task simply queues). Changes a turn would overwrite (blocks, settings) never join: a
        tool making one gets ReentrantLockError at once."""
        agent_id = await self.resolve_agent(agent)
        turn = TURN_TASK.get()
        if join_turn and turn is not None and self.running.get(agent_id) is turn:
            yield self.leases.join(agent_id)  # the tool runs inside a step: its commit lands before the step's
            return
        async with (
            self.locks.hold(agent_id),  # never change an agent under a running step
            self.leases.hold(agent_id, agent if isinstance(agent, str) else None) as lease,
        ):
            yield lease

    @contextlib.asynccontextmanager
    async def agent_change(self, agent: Any) -> AsyncIterator[tuple[AgentState, int]]:
        """A change to what sessions cache (blocks, tools, settings, deletion) through :meth:`agent_lease`:
        yields the agent's state as of the grant and the lease token (pass it to the store, which bumps the
        agent's version under it, so every process reloads it) and drops the cached session after."""
        async with self.agent_lease(agent) as lease:
            try:
                session = await self.session(lease.agent_id, (lease.last_seq, lease.version, lease.tools_version))
                yield session.agent, lease.token
            finally:
                self.invalidate_agent(lease.agent_id)

    def invalidate_agent(self, agent_id: str) -> None:
        self.agent_cache.invalidate(agent_id)

    def _tools_changed(self, version: int) -> None:
        """Some process registered or changed a tool: resolved tools (and the sessions holding them) are
        reloaded; this process's own registrations stay only where the store still has them as registered."""
        first = self._tools_version is None
        self._tools_version = version
        if first:
            return
        self.tool_cache.clear()
        self.agent_cache.clear()
        self._unverified = set(self._user_tools)


def _wrote(agent: AgentState) -> bool:
    """Whether this user wrote the agent's model and embedding specs (runtime/trust.py)."""
    return trust.verify("agent", trust.agent_fields(agent.id, agent.model, agent.embedding), agent.signature)


def tool_record(spec: ToolSpec) -> ToolRecord:
    """A tool as the store keeps it (unsigned)."""
    mode = "strict" if spec.sandbox == "strict" else ("on" if spec.sandbox else "off")
    return ToolRecord(name=spec.name, description=spec.description, json_schema=spec.parameters, source=spec.source,
                      parallel_safe=spec.parallel_safe, sandbox=mode != "off", sandbox_mode=mode,
                      network=spec.network, timeout=spec.timeout, requires_approval=spec.requires_approval)


def _signed(tool: ToolRecord) -> ToolRecord:
    return dataclasses.replace(tool, signature=trust.sign("tool", trust.tool_fields(tool)))


def tool_from_record(tool: ToolRecord) -> ToolSpec:
    """A stored tool as a spec, compiled from source only when called (reading never runs code).

    A tool this user did not sign (a shared store, an imported agent, an edit made in the database) runs
    only in the strict sandbox and without network, whatever its stored isolation says."""
    if trust.verify("tool", trust.tool_fields(tool), tool.signature):
        mode = tool.sandbox_mode or ("on" if tool.sandbox else "off")
        sandbox: bool | str = {"off": False, "on": True}.get(mode, "strict")
        network = bool(tool.network) and sandbox is not False
    else:
        sandbox, network = "strict", False
    return ToolSpec(name=tool.name, description=tool.description, parameters=tool.json_schema, func=None,
                    source=tool.source, parallel_safe=tool.parallel_safe, sandbox=sandbox,  # type: ignore[arg-type]
                    timeout=tool.timeout, network=network, requires_approval=bool(tool.requires_approval))


def _ordered_tools(names: list[str]) -> list[str]:
    base = [n for n in BASE_TOOL_NAMES if n in names]
    return base + sorted(n for n in names if n not in BASE_TOOLS)

