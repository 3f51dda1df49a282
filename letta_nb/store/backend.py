"""What the runtime sees of a storage backend: step writes, file writes, vectors and coordination.

Reads stay portable SQLAlchemy (store.py, files.py) and need no protocol; what differs between SQLite and
a server database is how the hot paths write and how processes take turns. Those are the four small
protocols below. The SQLite backend (store/sqlite/) implements them; a PostgreSQL one (an asyncpg step
writer, COPY for uploads, pgvector, lease rows or Redis) implements the same, and
``tests/test_store_backend.py`` checks an implementation against them (names, parameters, sync or async):
the checklist a new backend starts from.

The runtime hands these writers domain objects (store/records.py), never column dicts: a backend decides
how a record becomes its rows.

- :class:`StepWrites` commits a :class:`StepWrite` (everything one step changes) atomically, or runs an
  :data:`Op` in a write transaction, and answers a quick read. A fenced write commits only while its lease
  token and the ``last_seq`` its turn read still hold (a compare-and-set in the same transaction); otherwise
  it is refused whole with ``StaleCommitError``.
- :class:`FileWrites` replaces an upload's files and their passages, each file all there or absent; fenced
  like a step (by the lease token alone: an upload writes no message), it is refused whole if the lease was
  lost.
- :class:`~letta_nb.store.vector.VectorStore` (store/vector.py) searches an agent's passages.
- :class:`LeaseRows` are the lease-row operations the runtime's :mod:`letta_nb.runtime.leases` runs inside
  the step writer's transactions (as ops) or reads: one lease per agent, a fencing token that only grows,
  waiters served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from letta_nb.errors import StaleCommitError
from letta_nb.schemas import Message
from letta_nb.store.records import PassageRecord, StepRecord
from letta_nb.store.vector import VectorStore

if TYPE_CHECKING:  # store/files.py fences its writes with the lease rows, which import this module
    from letta_nb.store.files import FileUpdate

__all__ = ["AsyncLeaseRows", "Busy", "FileWrites", "Grant", "LeaseRows", "Op", "StepWrite", "StepWrites",
           "VectorStore", "settle_group"]


@dataclass
class StepWrite:
    """Everything one step changes: its messages, block edits, archival passages, metrics row, and the
    agent row's sequence and context pointers (``None``: unchanged)."""

    agent_id: str
    messages: list[Message] = field(default_factory=list)
    block_values: dict[str, str] = field(default_factory=dict)  # label -> new value
    # label -> the value the step's edit started from: the write lands only if the block still holds it (a
    # shared block another agent edited meanwhile refuses it: store/shared_blocks.py)
    block_bases: dict[str, str] = field(default_factory=dict)
    passages: list[PassageRecord] = field(default_factory=list)
    step: StepRecord | None = None
    last_seq: int | None = None
    context_start_seq: int | None = None  # an eviction moves the context window's start ...
    context_summary: str | None = None  # ... and rewrites the note on what left it
    # (lease token, the agent's last_seq this step builds on): the write lands only if both still hold
    # (store/sqlite/leases.py); with ``lease_until`` the lease is renewed to then.
    fence: tuple[int, int] | None = None
    lease_until: float | None = None

    def agent_columns(self) -> dict[str, Any]:
        """The agent row's columns this write changes."""
        values = {"last_seq": self.last_seq, "context_start_seq": self.context_start_seq,
                  "context_summary": self.context_summary}
        return {k: v for k, v in values.items() if v is not None}


Op = Callable[[Any], Any]
"""A function of a cursor run in a group's transaction (lease grants and releases); its value is its result."""


@dataclass(frozen=True)
class Grant:
    """The lease is ours: ``token`` fences our commits; the agent's state as of the grant."""

    token: int
    last_seq: int
    version: int
    tools_version: int  # store-wide: bumped when a tool is registered or changed
    took_expired: bool  # the previous holder had not released it: its lease expired


@dataclass(frozen=True)
class Busy:
    """Another process holds the lease (or an older waiter is ahead of us)."""

    holder: str | None
    pid: int | None
    host: str | None
    since: float | None
    expires_at: float | None


@runtime_checkable
class StepWrites(Protocol):
    """The step writer: group commits on the runtime's event loop."""

    def submit(self, write: StepWrite | Op) -> asyncio.Future[Any]:
        """Queue a write (or an op); the future resolves once it is durable: to the commit's milliseconds (an
        op: to its value). A fenced write that was refused fails with StaleCommitError, nothing written."""

    def read(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read-only ``fn(cursor)`` now, on the loop (coherence checks of one indexed row)."""

    def close(self) -> None:
        """Commit what was submitted, then release the connections."""


@runtime_checkable
class FileWrites(Protocol):
    """The uploads' bulk writer. Blocking: the store calls it from a worker thread."""

    def replace_files(self, updates: list[FileUpdate], fence: tuple[str, int] | None = None) -> None:
        """Make each ``(file, passages)`` its file's whole record (keyed by agent and path), in one
        transaction; with ``fence`` ``(agent_id, lease token)``, only while that lease holds (else
        StaleCommitError, nothing written)."""

    def close(self) -> None:
        """Release the connection."""


@runtime_checkable
class LeaseRows(Protocol):
    """Lease rows on a backend cursor (an :data:`Op`'s argument). A module of functions satisfies it."""

    def acquire(self, cur: Any, agent_id: str, holder: str, pid: int, host: str, now: float, ttl: float,
                ticket_ttl: float) -> Grant | Busy | None:
        """Take the lease if it is free or expired and no older live waiter is queued, else queue (or keep)
        our ticket; ``None``: the agent does not exist."""

    def renew(self, cur: Any, agent_id: str, token: int, expires_at: float) -> bool:
        """Extend our lease; False if it is no longer ours."""

    def release(self, cur: Any, agent_id: str, token: int) -> bool:
        """Give the lease up (a no-op if it is no longer ours)."""

    def peek(self, cur: Any, agent_id: str,
             now: float) -> tuple[int | None, str | None, float | None, int, int, int, bool] | None:
        """Read-only: ``(token, holder, expires_at, last_seq, version, tools_version, waiters)``, None if the
        agent is gone."""

    def agent_state(self, cur: Any, agent_id: str) -> tuple[int, int, int] | None:
        """Read-only: ``(last_seq, version, tools_version)``, None if the agent is gone."""

    def drop_ticket(self, cur: Any, agent_id: str, holder: str) -> None:
        """Leave the agent's queue (a waiter that gave up)."""


@runtime_checkable
class AsyncLeaseRows(Protocol):
    """:class:`LeaseRows` as coroutines of an async driver's connection (PostgreSQL's asyncpg): the same
    names, parameters and results, awaited. A backend whose rows are async also returns an awaitable from
    :meth:`StepWrites.read`; the runtime awaits whatever is awaitable."""

    async def acquire(self, cur: Any, agent_id: str, holder: str, pid: int, host: str, now: float, ttl: float,
                      ticket_ttl: float) -> Grant | Busy | None: ...

    async def renew(self, cur: Any, agent_id: str, token: int, expires_at: float) -> bool: ...

    async def release(self, cur: Any, agent_id: str, token: int) -> bool: ...

    async def peek(self, cur: Any, agent_id: str,
                   now: float) -> tuple[int | None, str | None, float | None, int, int, int, bool] | None: ...

    async def agent_state(self, cur: Any, agent_id: str) -> tuple[int, int, int] | None: ...

    async def drop_ticket(self, cur: Any, agent_id: str, holder: str) -> None: ...


def settle_group(batch: list[tuple[StepWrite | Op, asyncio.Future[Any]]], results: list[Any], ms: float,
                 settle: Callable[..., None]) -> int:
    """Answer each caller of a committed group (every backend's step writer does it so): an op gets its value,
    a write the commit's milliseconds, or StaleCommitError when its fence refused it. Returns how many were
    refused. ``settle(fut, value=..., error=...)`` is the writer's way of reaching the future's loop."""
    refused = 0
    for (item, fut), result in zip(batch, results, strict=True):
        if not isinstance(item, StepWrite):
            settle(fut, value=result)
        elif result:
            settle(fut, value=ms)
        else:
            refused += 1
            settle(fut, error=StaleCommitError(item.agent_id))
    return refused
