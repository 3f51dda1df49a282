"""Per-agent locks: one agent's steps run one at a time, and different agents never wait on each other.

An agent step reads core memory, calls the model and commits messages. If two steps of one agent interleaved on
the event loop, messages could be committed out of order or a memory edit could be lost. So every step runs
inside ``AgentLocks.hold(agent_id)``, which commits an agent's messages in step order. Each step's queueing time
is recorded, because lock contention is the first thing to check when a notebook's agents feel slow.

Invariants:

* At most one task holds an agent's lock. Waiters acquire it in arrival (FIFO) order, including in two
  cancellation cases. A queued waiter that is cancelled leaves the queue and the others keep their places. A
  waiter cancelled just after being woken passes the lock on to the next waiter (a release hands the lock to the
  first waiter directly, so a newcomer can never barge in between).
* Arrival is the order of the ``hold`` calls, whatever names the agent. A caller may pass a reference that must
  first be resolved to an id (an agent's name: a store query); resolving and taking a place in the agent's queue
  happen under one FIFO admission gate, so a send by name cannot be overtaken by a later send (by name or id)
  whose resolution happened to finish first. Measured before the gate: 12-14 inversions in 30 concurrent sends
  by name. The gate is held only while resolving (no await at all when resolution needs none); waiting for the
  agent's lock happens outside it, so agents still never wait on each other.
* The table has an entry for an agent only while some task holds or awaits that agent's lock. Each entry
  refcounts its users (``waiting`` plus the holder). The last user to leave deletes the entry, whether it leaves
  normally, by an exception or by cancellation. So ``len()`` returns to 0 when the runtime is idle, and the table
  cannot grow with the number of agents ever seen.
* The lock is not reentrant. If a task calls ``hold`` for an agent whose lock it already holds, it gets
  :class:`ReentrantLockError` instead of a silent deadlock. So does a tool of an agent turn that holds the
  lock (in a thread or a task of its own, and whatever it submits to the runtime loop from there): the agent
  loop sets :data:`TURN_TASK` in the turn's context, which they all inherit. Other tasks merely wait.
* Everything runs on the runtime's single event loop, so the table needs no thread lock. ``len()``, ``waits``,
  ``is_locked`` and ``waiting`` only read plain ints, dicts and a deque, so other threads can call them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass

from letta_nb.errors import InvalidArgumentError, LettaNBError

__all__ = ["AgentLocks", "LockWait", "ReentrantLockError", "TURN_TASK"]

log = logging.getLogger(__name__)


#: The task of the agent turn this context belongs to, set by the agent loop (see "not reentrant" above).
TURN_TASK: contextvars.ContextVar[object] = contextvars.ContextVar("letta_nb_turn_task", default=None)


class ReentrantLockError(LettaNBError, RuntimeError):
    """A task tried to take an agent's lock while already holding it, which would deadlock."""


@dataclass(frozen=True)
class LockWait:
    """How long one ``hold`` waited for an agent's lock (``wait_ms``), and when it got it (``time.time()``)."""

    agent_id: str
    wait_ms: float
    acquired_at: float


class _Slot:
    """One agent's entry in the table: a FIFO lock, how many tasks are queued for it, and the holding task.

    ``owned`` is true from the moment the lock is granted (to a holder, or to a woken waiter that has not run
    yet) until a release finds no waiter; ``queue`` is non-empty only while ``owned``.
    """

    __slots__ = ("owned", "queue", "waiting", "holder")

    def __init__(self) -> None:
        self.owned = False
        self.queue: deque[asyncio.Future[None]] = deque()
        self.waiting = 0
        self.holder: asyncio.Task[object] | None = None

    def reserve(self) -> asyncio.Future[None] | None:
        """Take a place in line (never awaits): None if the lock was free and is now ours, else a future that
        is resolved when our turn comes."""
        if not self.owned:
            self.owned = True
            return None
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(place)
        return place

    def release(self) -> None:
        """Hand the lock to the first waiter still waiting, or free it."""
        while self.queue:
            place = self.queue.popleft()
            if not place.done():  # a cancelled waiter's place is skipped
                place.set_result(None)
                return
        self.owned = False


class AgentLocks:
    """Per-agent asyncio locks, FIFO (arrival order), created on demand, dropped when idle."""

    def __init__(self, *, on_wait: Callable[[str, float], None] | None = None, history: int = 10000) -> None:
        if history < 0:
            raise InvalidArgumentError(f"history must be 0 or more (the number of waits kept), got {history}.")
        self._slots: dict[str, _Slot] = {}
        self._gate = asyncio.Lock()  # admission: resolve and take a place, in arrival order
        self._on_wait = on_wait
        #: The most recent ``history`` acquisitions, oldest first.
        self.waits: deque[LockWait] = deque(maxlen=history)

    def hold(self, agent: str, resolve: Callable[[str], Awaitable[str]] | None = None,
             ) -> AbstractAsyncContextManager[str]:
        """``async with locks.hold(agent_id) as agent_id:`` runs the block while holding that agent's lock.

        With ``resolve``, ``agent`` may be any reference (a name); ``await resolve(agent)`` gives the id, in
        arrival order (see the module docstring), and the block receives it. ``resolve`` may raise to refuse.
        Records the wait in ``waits`` and passes it to ``on_wait(agent_id, wait_ms)``.
        """
        return _Hold(self, agent, resolve)

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
        if slot.waiting == 0 and not slot.owned and self._slots.get(agent_id) is slot:
            del self._slots[agent_id]

    def _record(self, wait: LockWait) -> None:
        self.waits.append(wait)
        if self._on_wait is not None:
            try:
                self._on_wait(wait.agent_id, wait.wait_ms)
            except Exception:  # telemetry must never stop a step from running
                log.exception("AgentLocks: on_wait callback failed for agent %r", wait.agent_id)


class _Hold:
    """One ``hold``: a plain async context manager (an ``asynccontextmanager`` generator costs a few us more
    per turn, and every turn takes one)."""

    __slots__ = ("_locks", "_agent", "_resolve", "_slot", "_agent_id")

    def __init__(self, locks: AgentLocks, agent: str, resolve: Callable[[str], Awaitable[str]] | None) -> None:
        self._locks, self._agent, self._resolve = locks, agent, resolve
        self._slot: _Slot | None = None
        self._agent_id = ""

    async def __aenter__(self) -> str:
        locks = self._locks
        task = asyncio.current_task()
        started = time.perf_counter()
        async with locks._gate:  # no suspension when the gate is free and resolving needs no await
            agent_id = self._agent if self._resolve is None else await self._resolve(self._agent)
            slot = locks._slots.get(agent_id)
            if slot is None:
                slot = locks._slots[agent_id] = _Slot()
            elif slot.holder is not None and slot.holder in (task, TURN_TASK.get()):
                raise ReentrantLockError(
                    f"This task (or the agent turn running this tool) already holds the lock of agent "
                    f"{agent_id!r}; hold() is not reentrant, so entering it again would deadlock. Do the nested "
                    f"work inside the existing block instead of locking again."
                )
            slot.waiting += 1
            place = slot.reserve()
        try:
            if place is not None:
                await place
        except BaseException:  # cancelled while queued, or just after being woken
            slot.waiting -= 1
            if place is not None and place.done() and not place.cancelled():
                slot.release()  # we had been handed the lock: pass it on
            elif place is not None:
                with suppress(ValueError):
                    slot.queue.remove(place)
            locks._drop_if_idle(agent_id, slot)
            raise
        slot.waiting -= 1
        slot.holder = task
        self._slot, self._agent_id = slot, agent_id
        try:
            locks._record(LockWait(agent_id, (time.perf_counter() - started) * 1000.0, time.time()))
        except BaseException:
            self._release()
            raise
        return agent_id

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.holder = None
            slot.release()
            self._locks._drop_if_idle(self._agent_id, slot)
