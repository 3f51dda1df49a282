"""The store: agents, blocks, messages (recall), tools, passages (archival) and step metrics.

Design:
- One SQLAlchemy async engine serves reads and administrative writes (create/delete/update); the hot
  per-step writes go through :class:`~letta_nb.store.sqlite.step_writer.StepWriter` (see its docstring for the
  measurement that motivated it). Both talk to the same SQLite file in WAL mode.
- The schema comes from :mod:`letta_nb.store.migrations`, applied when the store opens.
- Messages of an agent are ordered by ``seq`` (unique per agent); the runtime assigns it under the
  per-agent lock. Nothing here ever deletes a message except deleting its agent.
- Only portable Core statements; rows become :mod:`letta_nb.schemas` objects and records
  (store/records.py) at this boundary, in both directions. The agent rows behind the operations (agents read
  with their blocks and tools, recall, inserts, the fence of a change) are in store/agent_rows.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from letta_nb.errors import (
    AgentNotFoundError,
    BlockNotFoundError,
    StoreError,
    StoreWarning,
)
from letta_nb.schemas import AgentState, Block, Message, Passage
from letta_nb.store import agent_rows
from letta_nb.store.backend import StepWrite
from letta_nb.store.engine import (
    WRITE,
    StoreLocation,
    check_store_file,
    make_async_engine,
    resolve_location,
)
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.migrations import METADATA, migrate
from letta_nb.store.records import (
    PassageRecord,
    StepRecord,
    ToolRecord,
    columns,
    from_row,
    passage_from_row,
    row_to_message,
    tool_calls_value,
)
from letta_nb.store.sqlite import fulltext as sqlite_fulltext
from letta_nb.store.sqlite import leases as sqlite_leases
from letta_nb.store.sqlite.checkpointer import Checkpointer, writer_connection
from letta_nb.store.sqlite.driver import connect_raw
from letta_nb.store.sqlite.file_writer import FileWriter
from letta_nb.store.sqlite.filesystem import network_filesystem
from letta_nb.store.sqlite.readonly import ReadOnlyQuery
from letta_nb.store.sqlite.step_writer import StepWriter, is_busy
from letta_nb.store.sqlite.vectors import SqliteVecStore, drop_vec_triggers

__all__ = ["Store"]

T = METADATA.tables
R = TypeVar("R")
_log = logging.getLogger(__name__)


class Store:
    """Async access to one letta_nb database. Create with :meth:`open` on the runtime's event loop."""

    def __init__(self, location: StoreLocation, engine: AsyncEngine, writer: Any, *, backend: Any = None):
        self.location = location
        self.engine = engine
        self._writer_engine = engine.execution_options(**WRITE)
        self.writer = writer
        self.applied_migrations: list[str] = []
        self._backend = backend  # the PostgreSQL backend (store/postgres/), None on SQLite
        # change notices between processes without Redis (store/postgres/notices.py); SQLite has none
        self.notices: Any = backend.notices if backend is not None else None
        self.pg_pool_monitor: Any = backend.pool_monitor if backend is not None else None  # probes.pool()
        self._unindexed = 0  # messages submitted since the last catch-up of SQLite's message index was asked for
        if backend is not None:
            self.vectors, self.file_writer, self.lease_rows = backend.vectors, backend.file_writer, backend.lease_rows
        else:
            assert location.sqlite_path is not None  # no backend: a SQLite store
            self.vectors = SqliteVecStore(location.sqlite_path)  # archival search; see store/sqlite/vectors.py
            # uploads' bulk writes; see store/sqlite/file_writer.py
            self.file_writer = FileWriter(location.sqlite_path, writer.checkpointer)
            self.lease_rows = sqlite_leases  # what runtime/leases.py runs in the writer (store/backend.py)

    @classmethod
    async def open(cls, where: Any = None) -> Store:
        location = resolve_location(where)
        if location.sqlite_path is None:
            return await cls._open_postgres(location)
        if location.temporary is None:
            check_store_file(location.sqlite_path)  # not a database, or not ours: refused, left untouched
            remote = network_filesystem(location.sqlite_path)
            if remote is not None:
                warnings.warn(StoreWarning(
                    f"The store {location.sqlite_path!r} is on a network filesystem ({remote}). SQLite's WAL mode "
                    "does not work there: two kernels on different hosts can corrupt it. Put the store on a local "
                    "disk (letta_nb.connect('/local/path/letta_nb.db') or LETTA_NB_HOME), or share agents "
                    "through a database server."), stacklevel=2)
        engine = make_async_engine(location)
        try:
            applied = await _migrate_when_free(engine, location.sqlite_path)
        except BaseException:
            await engine.dispose()
            raise
        path = location.sqlite_path
        checkpointer = Checkpointer(functools.partial(connect_raw, path, vec=False))
        store = cls(location, engine, StepWriter(functools.partial(writer_connection, path), checkpointer=checkpointer))
        store.applied_migrations = applied
        return store

    @classmethod
    async def _open_postgres(cls, location: StoreLocation) -> Store:
        from letta_nb.store.postgres import open_backend, schema

        engine = make_async_engine(location)
        try:
            async with engine.connect() as conn:
                applied = await conn.run_sync(migrate)
                await conn.run_sync(schema.ensure)
            backend = await open_backend(location)
        except BaseException:
            await engine.dispose()
            raise
        store = cls(location, engine, backend.writer, backend=backend)
        store.applied_migrations = applied
        return store

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.close()
            await self.engine.dispose()
            return
        self.writer.close()
        await self.vectors.close()
        self.file_writer.close()
        await self.engine.dispose()
        if self.location.temporary is not None:
            self.location.temporary.cleanup()

    def submit_step(self, write: StepWrite) -> asyncio.Future[float]:
        """Queue a step's rows for the step writer; the future gives the commit's milliseconds. Every
        ``BATCH`` messages, a catch-up of SQLite's message index joins the group (store/sqlite/fulltext.py)."""
        future: asyncio.Future[float] = self.writer.submit(write)
        if write.messages and self._backend is None:
            self._unindexed += len(write.messages)
            if self._unindexed >= sqlite_fulltext.BATCH:
                self._unindexed = 0
                self.writer.submit(sqlite_fulltext.catch_up).add_done_callback(_indexed)
        return future

    # ---- agents -------------------------------------------------------------------------------------
    async def insert_agent(self, agent: AgentState) -> None:
        async with self._writer_engine.begin() as conn:
            await agent_rows.insert_agent_rows(conn, agent, utcnow())

    async def insert_imported(self, agents: Sequence[AgentState], messages: Sequence[Message],
                              tools: Sequence[ToolRecord]) -> None:
        """An imported Agent File in one transaction: its new tools (by name; a name already stored is the
        caller's to have decided about), its agents with blocks and tool lists, and their messages. Either
        all of it is stored or, on any error, none of it."""
        now = utcnow()
        async with self._writer_engine.begin() as conn:
            for tool in tools:
                values = {k: v for k, v in columns(tool).items() if k not in ("id", "created_at", "updated_at")}
                await conn.execute(T["tools"].insert().values(id=new_id("tool"), created_at=now, updated_at=now,
                                                              **values))
            if tools:
                await conn.execute(sa.text("INSERT INTO store_counters (name, value) VALUES ('tools', 1) "
                                           "ON CONFLICT (name) DO UPDATE SET value = store_counters.value + 1"))
            for agent in agents:
                await agent_rows.insert_agent_rows(conn, agent, now)
            if messages:
                await conn.execute(T["messages"].insert(), [
                    {**columns(m), "tool_calls": tool_calls_value(m.tool_calls)} for m in messages])

    async def ensure_name_free(self, name: str) -> None:
        """AlreadyExistsError if an agent has this name (checked before work that must not half-happen)."""
        async with self.engine.connect() as conn:
            await agent_rows.ensure_name_free(conn, name)

    async def agent_names(self) -> dict[str, str]:
        """name -> id of every agent."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(agent_rows.agent_names)

    async def resolve_agent(self, name_or_id: str) -> str:
        """The id of the agent with this id or name; AgentNotFoundError with suggestions otherwise."""
        agents = T["agents"]
        async with self.engine.connect() as conn:
            found: str | None = await conn.scalar(
                sa.select(agents.c.id).where(sa.or_(agents.c.id == name_or_id, agents.c.name == name_or_id))
            )
        if found:
            return found
        raise AgentNotFoundError(name_or_id, list(await self.agent_names()))

    async def load_agent(self, agent_id: str) -> AgentState:
        async with self.engine.connect() as conn:
            return await conn.run_sync(agent_rows.agent, agent_id)

    async def list_agents(self) -> list[AgentState]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(agent_rows.agents_where, sa.true())

    async def load_session(self, agent_id: str) -> tuple[AgentState, list[Message]]:
        """The agent and the messages of its context, read in one transaction: one snapshot (a step
        committing meanwhile is wholly in or out) and one connection: ~3.5 ms an agent after a restart,
        against ~5.3 through two connections."""

        def read(conn: sa.Connection) -> tuple[AgentState, list[Message]]:
            agent = agent_rows.agent(conn, agent_id)
            return agent, agent_rows.messages(conn, agent_id, start_seq=agent.context_start_seq)

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def delete_agent(self, agent_id: str, fence: int | None = None) -> None:
        async with self._writer_engine.begin() as conn:
            await agent_rows.fenced(conn, agent_id, fence)
            result = await conn.execute(T["agents"].delete().where(T["agents"].c.id == agent_id))
        if result.rowcount == 0:
            raise AgentNotFoundError(agent_id, list(await self.agent_names()))

    async def update_agent(self, agent_id: str, fence: int | None = None, **values: Any) -> None:
        async with self._writer_engine.begin() as conn:
            await agent_rows.fenced(conn, agent_id, fence)
            await conn.execute(T["agents"].update().where(T["agents"].c.id == agent_id)
                               .values(updated_at=utcnow(), **values))

    async def set_agent_tools(self, agent_id: str, names: Iterable[str], fence: int | None = None) -> None:
        at = T["agent_tools"]
        async with self._writer_engine.begin() as conn:
            await agent_rows.fenced(conn, agent_id, fence)
            await conn.execute(at.delete().where(at.c.agent_id == agent_id))
            rows = [dict(agent_id=agent_id, tool_name=n) for n in sorted(set(names))]
            if rows:
                await conn.execute(at.insert(), rows)

    # ---- blocks -------------------------------------------------------------------------------------
    async def update_block(self, agent_id: str, label: str, fence: int | None = None, **values: Any) -> None:
        blocks = T["blocks"]
        async with self._writer_engine.begin() as conn:
            await agent_rows.fenced(conn, agent_id, fence)
            result = await conn.execute(
                blocks.update()
                .where(blocks.c.agent_id == agent_id, blocks.c.label == label)
                .values(updated_at=utcnow(), **values)
            )
            if result.rowcount == 0:
                labels = (await conn.execute(sa.select(blocks.c.label).where(blocks.c.agent_id == agent_id))).scalars()
                raise BlockNotFoundError(label, list(labels))

    async def write_sync(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(conn, *args)`` on a sync connection in one write transaction (a module of sync queries,
        such as store/shared_blocks.py, composes its statements into one change this way)."""
        async with self._writer_engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    async def insert_block(self, agent_id: str, block: Block) -> None:
        async with self._writer_engine.begin() as conn:
            await conn.execute(
                T["blocks"].insert().values(
                    id=block.id, agent_id=agent_id, label=block.label, value=block.value, char_limit=block.limit,
                    description=block.description, read_only=block.read_only, updated_at=utcnow(),
                )
            )

    # ---- messages -----------------------------------------------------------------------------------
    async def load_messages(
        self, agent_id: str, *, start_seq: int = 0, limit: int | None = None, newest_first: bool = False
    ) -> list[Message]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(agent_rows.messages, agent_id, start_seq=start_seq, limit=limit,
                                       newest_first=newest_first)

    async def search_messages(self, agent_id: str, words: Sequence[str], *, limit: int = 10) -> list[Message]:
        """User/assistant messages containing any of ``words`` (case-insensitive), newest first."""
        m = T["messages"]
        if not words:
            return []
        cond = sa.or_(*(sa.func.lower(m.c.content).contains(w.lower()) for w in words),
                      *(sa.func.lower(sa.cast(m.c.tool_calls, sa.Text)).contains(w.lower()) for w in words))
        q = (
            sa.select(m)
            .where(m.c.agent_id == agent_id, m.c.role.in_(("user", "assistant")), cond)
            .order_by(m.c.seq.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [row_to_message(r) for r in await conn.execute(q)]

    async def count_messages(self, agent_id: str) -> int:
        m = T["messages"]
        async with self.engine.connect() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(m).where(m.c.agent_id == agent_id))
        return count or 0  # COUNT(*) is never NULL

    # ---- tools --------------------------------------------------------------------------------------
    async def upsert_tool(self, tool: ToolRecord) -> None:
        """Register ``tool`` (by name), replacing its stored fields; the store keeps its id and times."""
        tools = T["tools"]
        now = utcnow()
        values = {k: v for k, v in columns(tool).items() if k not in ("id", "created_at", "updated_at")}
        async with self._writer_engine.begin() as conn:
            existing = await conn.scalar(sa.select(tools.c.id).where(tools.c.name == tool.name))
            if existing:
                await conn.execute(tools.update().where(tools.c.id == existing).values(updated_at=now, **values))
            else:
                await conn.execute(tools.insert().values(id=new_id("tool"), created_at=now, updated_at=now, **values))
            # Other processes compare this counter with theirs before using a cached tool (runtime.session).
            await conn.execute(sa.text("INSERT INTO store_counters (name, value) VALUES ('tools', 1) "
                                       "ON CONFLICT (name) DO UPDATE SET value = store_counters.value + 1"))

    async def delete_tool(self, name: str) -> None:
        """Delete a registered tool and take it from the agents that had it (their versions bumped, the tools
        counter too: every process reloads them)."""
        tools, at, agents = T["tools"], T["agent_tools"], T["agents"]
        async with self._writer_engine.begin() as conn:
            had = sa.select(at.c.agent_id).where(at.c.tool_name == name).scalar_subquery()
            await conn.execute(agents.update().where(agents.c.id.in_(had)).values(version=agents.c.version + 1))
            await conn.execute(at.delete().where(at.c.tool_name == name))
            await conn.execute(tools.delete().where(tools.c.name == name))
            await conn.execute(sa.text("INSERT INTO store_counters (name, value) VALUES ('tools', 1) "
                                       "ON CONFLICT (name) DO UPDATE SET value = store_counters.value + 1"))

    async def tool_rows(self) -> list[ToolRecord]:
        """Every registered tool, by name."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(T["tools"]).order_by(T["tools"].c.name))
            return [from_row(ToolRecord, r) for r in rows]

    # ---- passages -----------------------------------------------------------------------------------
    async def insert_passages(self, passages: list[PassageRecord]) -> None:
        async with self._writer_engine.begin() as conn:
            await conn.execute(T["passages"].insert(), [columns(p) for p in passages])

    async def list_passages(self, agent_id: str) -> list[Passage]:
        """The agent's passages, oldest first."""
        p = T["passages"]
        cols = [p.c.id, p.c.agent_id, p.c.text, p.c.tags, p.c.created_at]
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(*cols).where(p.c.agent_id == agent_id).order_by(p.c.created_at))
            return [passage_from_row(r) for r in rows]

    async def count_passages(self, agent_id: str) -> int:
        """How many passages the agent has (the context view and the widget's gauge read it after each turn)."""
        p = T["passages"]
        async with self.engine.connect() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(p).where(p.c.agent_id == agent_id))
        return count or 0

    async def passages_by_id(self, agent_id: str, ids: Sequence[str]) -> dict[str, Passage]:
        """id -> passage of the agent's passages among ``ids``."""
        p = T["passages"]
        cols = [p.c.id, p.c.agent_id, p.c.text, p.c.tags, p.c.created_at]
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(*cols).where(p.c.agent_id == agent_id, p.c.id.in_(list(ids))))
            return {r.id: passage_from_row(r) for r in rows}

    async def delete_passage(self, agent_id: str, passage_id: str, fence: int | None = None) -> bool:
        """Delete one passage; with ``fence`` (a lease token), refused if that lease no longer holds."""
        p = T["passages"]
        async with self._writer_engine.begin() as conn:
            await agent_rows.fenced(conn, agent_id, fence, bump=False)  # no session caches passages: no reload
            result = await conn.execute(p.delete().where(p.c.agent_id == agent_id, p.c.id == passage_id))
        return result.rowcount > 0

    # ---- people looking --------------------------------------------------------------------------------
    async def query(self, sql: str, params: Any = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(columns, rows) of one read-only statement (see store/sqlite/readonly.py), off the event loop."""
        if self._backend is not None:
            result: tuple[list[str], list[tuple[Any, ...]]] = await self._backend.query(sql, params)
            return result
        assert self.location.sqlite_path is not None  # no backend: a SQLite store
        reader = ReadOnlyQuery(self.location.sqlite_path)
        try:
            return await asyncio.to_thread(reader.run, sql, params)
        except asyncio.CancelledError:
            reader.interrupt()
            raise

    # ---- steps --------------------------------------------------------------------------------------
    async def step_rows(self, agent_id: str | None = None) -> list[StepRecord]:
        s = T["steps"]
        q = sa.select(s).order_by(s.c.created_at)
        if agent_id is not None:
            q = q.where(s.c.agent_id == agent_id)
        async with self.engine.connect() as conn:
            return [from_row(StepRecord, r) for r in await conn.execute(q)]

    # ---- full-text index ------------------------------------------------------------------------------
    async def catch_up_fulltext(self) -> int:
        """Index every message committed so far for full-text search, so a search that follows sees them all
        (SQLite indexes messages in batches, store/sqlite/fulltext.py; PostgreSQL's index is the row's own);
        returns how many were indexed. ~20 us when nothing waits, else one write transaction of the writer."""
        if self._backend is not None or not self.writer.read(sqlite_fulltext.backlog):
            return 0
        self._unindexed = 0
        try:
            return int(await self.writer.submit(sqlite_fulltext.catch_up))
        except Exception as e:  # the driver's error: a locked or full disk, a damaged index
            raise StoreError(
                f"indexing the messages committed since the last search failed: {e}. A message search must index "
                "them first to be exact; retry when the store is writable (another process may hold its write "
                "lock), or search with search_mode='vector'.") from e


def _indexed(future: asyncio.Future[Any]) -> None:
    """A batch catch-up nobody awaits: its failure is logged (the next search or batch indexes the rows)."""
    if not future.cancelled() and (error := future.exception()) is not None:
        _log.warning("indexing messages for full-text search failed; the next search retries: %s", error)


async def _migrate_when_free(engine: AsyncEngine, path: str, *, attempts: int = 100) -> list[str]:
    """Apply migrations (and drop vec0 triggers of earlier versions), waiting out other processes
    opening the same new store.

    SQLite answers "database is locked" at once, without its busy handler, when two connections could
    deadlock, as they can while both switch a brand-new file to WAL; so back off and retry (~10 s).
    """
    for attempt in range(attempts):
        try:
            async with engine.execution_options(**WRITE).connect() as conn:
                applied = await conn.run_sync(migrate)
                await conn.run_sync(drop_vec_triggers)
                return applied
        except sa.exc.DBAPIError as e:
            if not is_busy(e) or attempt == attempts - 1:
                raise StoreError(f"could not open the store {path!r}: {e.orig}. Check that it is a letta_nb "
                                 "store you can write, or pass another path.") from e
            await asyncio.sleep(0.02 + 0.08 * random.random())
    raise AssertionError("unreachable")
