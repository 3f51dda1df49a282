"""Per-agent locks: one agent's steps run one at a time, and different agents never wait on each other.

An agent step reads core memory, calls the model and commits messages. If two steps of one agent interleaved on
the event loop, messages could be committed out of order or a memory edit could be lost. So every step runs
inside ``AgentLocks.hold(agent_id)``, which commits an agent's messages in step order. Each step's queueing time
is recorded, because lock contention is the first thing to check when a notebook's agents feel slow.

Invariants:

* At most one task holds an agent's lock. Waiters acquire it in arrival (FIFO) order. ``asyncio.Lock`` provides
  this ordering, including in two cancellation cases. A queued waiter that is cancelled leaves the queue and the
  others keep their places. A waiter cancelled just after being woken passes the lock on to the next waiter.
* The table has an entry for an agent only while some task holds or awaits that agent's lock. Each entry
  refcounts its users (``waiting`` plus the holder). The last user to leave deletes the entry, whether it leaves
  normally, by an exception or by cancellation. So ``len()`` returns to 0 when the runtime is idle, and the table
  cannot grow with the number of agents ever seen.
* The lock is not reentrant. If a task calls ``hold`` for an agent whose lock it already holds, it gets
  :class:`ReentrantLockError` instead of a silent deadlock.
* Everything runs on the runtime's single event loop, so the table needs no thread lock. ``len()``, ``waits``,
  ``is_locked`` and ``waiting`` only read plain ints, dicts and a deque, so other threads can call them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from letta_nb.errors import InvalidArgumentError, LettaNBError

__all__ = ["AgentLocks", "LockWait", "ReentrantLockError"]

log = logging.getLogger(__name__)


class ReentrantLockError(LettaNBError, RuntimeError):
    """A task tried to take an agent's lock while already holding it, which would deadlock."""


@dataclass(frozen=True)
class LockWait:
    """How long one ``hold`` waited for an agent's lock (``wait_ms``), and when it got it (``time.time()``)."""

    agent_id: str
    wait_ms: float
    acquired_at: float


class _Slot:
    """One agent's entry in the table: the lock, how many tasks are queued for it, and the holding task."""

    __slots__ = ("lock", "waiting", "holder")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.holder: asyncio.Task[object] | None = None


class AgentLocks:
    """Per-agent asyncio locks, FIFO (arrival order), created on demand, dropped when idle."""

    def __init__(self, *, on_wait: Callable[[str, float], None] | None = None, history: int = 10000) -> None:
        if history < 0:
            raise InvalidArgumentError(f"history must be 0 or more (the number of waits kept), got {history}.")
        self._slots: dict[str, _Slot] = {}
        self._on_wait = on_wait
        #: The most recent ``history`` acquisitions, oldest first.
        self.waits: deque[LockWait] = deque(maxlen=history)

    def hold(self, agent_id: str) -> AbstractAsyncContextManager[None]:
        """``async with locks.hold(agent_id):`` runs the block while holding that agent's lock.

        Records the wait in ``waits`` and passes it to ``on_wait(agent_id, wait_ms)``.
        """
        return self._hold(agent_id)

    @asynccontextmanager
    async def _hold(self, agent_id: str) -> AsyncIterator[None]:
        task = asyncio.current_task()
        slot = self._slots.get(agent_id)
        if slot is None:
            slot = self._slots[agent_id] = _Slot()
        elif task is not None and slot.holder is task:
            raise ReentrantLockError(
                f"This task already holds the lock of agent {agent_id!r}; hold() is not reentrant, so entering it "
                f"again would deadlock. Do the nested work inside the existing block instead of locking again."
            )
        slot.waiting += 1
        started = time.perf_counter()
        try:
            await slot.lock.acquire()
        except BaseException:  # cancelled while queued; asyncio.Lock has already passed any wake-up along
            slot.waiting -= 1
            self._drop_if_idle(agent_id, slot)
            raise
        slot.waiting -= 1
        slot.holder = task
        try:
            self._record(LockWait(agent_id, (time.perf_counter() - started) * 1000.0, time.time()))
            yield
        finally:
            slot.holder = None
            slot.lock.release()
            self._drop_if_idle(agent_id, slot)

    def __len__(self) -> int:
        """Entries currently in the table: agents whose lock is held or awaited."""
        return len(self._slots)

    def is_locked(self, agent_id: str) -> bool:
        slot = self._slots.get(agent_id)
        return slot is not None and slot.holder is not None

    def waiting(self, agent_id: str) -> int:
        """How many tasks are queued for the agent's lock (not counting the holder)."""
        slot = self._slots.get(agent_id)
        return 0 if slot is None else slot.waiting

    def __repr__(self) -> str:
        return f"<AgentLocks active={len(self._slots)} recorded_waits={len(self.waits)}>"

    def _drop_if_idle(self, agent_id: str, slot: _Slot) -> None:
        if slot.waiting == 0 and slot.holder is None and self._slots.get(agent_id) is slot:
            del self._slots[agent_id]

    def _record(self, wait: LockWait) -> None:
        self.waits.append(wait)
        if self._on_wait is not None:
            try:
                self._on_wait(wait.agent_id, wait.wait_ms)
            except Exception:  # telemetry must never stop a step from running
                log.exception("AgentLocks: on_wait callback failed for agent %r", wait.agent_id)
