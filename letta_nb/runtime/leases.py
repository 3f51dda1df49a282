"""Cross-process leases: one process at a time writes an agent's turns, and a stale one cannot write at all.

Two kernels on one store each keep a picture of an agent (its session, ``last_seq``, caches); without
coordination both appended messages with the same ``seq`` (measured: 21 of 60 turns failed after the model
call was paid for, and each failed turn's user message was dropped). So every turn, and every change to an
agent (blocks, tools, settings, deletion), runs under the agent's lease (store/leases.py):

- **Correctness comes from the commit, not from the lease.** The grant carries a fencing token and the
  agent's ``last_seq``/``version`` read in the same transaction; a stale session is reloaded before the model
  is called. Every step commit is a compare-and-set on that token and ``last_seq``: a turn whose lease
  expired (a paused process, a long GC) and was taken is refused without writing anything
  (``StaleCommitError``), however sure the process was that it held the lease.
- **Leases queue, they do not bounce.** A process that finds the lease held waits its turn in arrival order
  (a ticket row per waiter, polled with backoff from 2 to 50 ms: SQLite has no notifications) and gets
  ``AgentBusyError`` naming the holder only after ``lease_timeout``. In-process turns already queue on the
  agent's lock (locks.py) before they reach this, so a process has at most one waiter per agent.
- **A dead holder blocks others only until its lease expires** (``lease_ttl``, 30 s by default). A live one
  renews it with every step commit and, during long model calls, every ``ttl/3`` from a heartbeat.
- **Cheap when alone:** a grant is one row write in the step writer's group commit (shared by every agent
  that starts a turn in the same loop iteration) and the release rides on the turn's last step commit.

``events`` records each grant, wait, expiry takeover and refused commit for ``probes.leases()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from letta_nb.errors import AgentBusyError, AgentNotFoundError, InvalidArgumentError
from letta_nb.store import leases as rows
from letta_nb.store.leases import Busy, Grant

__all__ = ["AgentLeases", "Lease", "LeaseEvent", "check_settings"]

_TICKET_TTL = 5.0  # a waiter renews its ticket at every poll; one that stops (killed) drops out after this


@dataclass
class Lease:
    """A held lease: ``token`` fences this turn's commits; ``released`` once given up."""

    agent_id: str
    token: int
    last_seq: int
    version: int
    tools_version: int
    released: bool = False
    heartbeat: asyncio.Task | None = None


@dataclass(frozen=True)
class LeaseEvent:
    """One row of ``probes.leases()``."""

    agent_id: str
    event: str  # acquired | waited | took_expired | renewed | released | refused_commit | timed_out
    at: float  # time.time()
    wait_ms: float
    token: int | None
    holder_pid: int | None
    holder_host: str | None


class AgentLeases:
    """The leases of one runtime (one holder identity) on its store."""

    def __init__(self, writer: Any, *, ttl: float = 30.0, timeout: float = 120.0, history: int = 100_000):
        check_settings(ttl, timeout)
        self._writer = writer
        self.ttl, self.timeout = float(ttl), float(timeout)
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.holder = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.events: collections.deque[LeaseEvent] = collections.deque(maxlen=history)

    def _event(self, agent_id: str, event: str, wait_ms: float = 0.0, token: int | None = None,
               pid: int | None = None, host: str | None = None) -> None:
        self.events.append(LeaseEvent(agent_id, event, time.time(), wait_ms, token, pid, host))

    async def acquire(self, agent_id: str, name: str | None = None) -> Lease:
        """Wait (in arrival order) for the agent's lease; AgentBusyError after ``timeout``."""
        start = time.monotonic()
        delay, waited, busy = 0.002, False, None
        try:
            while True:
                op = functools.partial(rows.acquire, agent_id=agent_id, holder=self.holder, pid=self.pid,
                                       host=self.host, now=time.time(), ttl=self.ttl, ticket_ttl=_TICKET_TTL)
                result = await self._writer.submit(lambda cur, op=op: op(cur))
                if isinstance(result, Grant):
                    break
                if result is None:
                    raise AgentNotFoundError(name or agent_id, [])
                busy = result
                if not waited:
                    waited = True
                    self._event(agent_id, "waited", 0.0, None, busy.pid, busy.host)
                if time.monotonic() - start > self.timeout:
                    self._event(agent_id, "timed_out", (time.monotonic() - start) * 1000, None, busy.pid, busy.host)
                    raise AgentBusyError(name or agent_id, _holder(busy), time.monotonic() - start)
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.05)
        except BaseException:
            if waited:  # leave the queue at once rather than when the ticket expires
                await asyncio.shield(self._writer.submit(functools.partial(_drop_ticket, agent_id=agent_id,
                                                                           holder=self.holder)))
            raise
        wait_ms = (time.monotonic() - start) * 1000 if waited else 0.0
        self._event(agent_id, "took_expired" if result.took_expired else "acquired", wait_ms, result.token,
                    self.pid, self.host)
        lease = Lease(agent_id, result.token, result.last_seq, result.version, result.tools_version)
        lease.heartbeat = asyncio.get_running_loop().create_task(self._beat(lease))
        return lease

    async def _beat(self, lease: Lease) -> None:
        """Renew a lease held across a long model call or tool; steps renew it too, so this rarely writes."""
        while not lease.released:
            await asyncio.sleep(self.ttl / 3)
            if lease.released:
                return
            renew = functools.partial(rows.renew, agent_id=lease.agent_id, token=lease.token,
                                      expires_at=time.time() + self.ttl)
            if await self._writer.submit(lambda cur, op=renew: op(cur)):
                self._event(lease.agent_id, "renewed", 0.0, lease.token, self.pid, self.host)
            else:
                return  # lost: the turn's next commit is refused

    def until(self) -> float:
        """When a lease renewed now expires (step commits carry it)."""
        return time.time() + self.ttl

    def released(self, lease: Lease) -> None:
        """The lease was given up by a commit (the turn's last step): stop renewing it."""
        lease.released = True
        if lease.heartbeat is not None:
            lease.heartbeat.cancel()
        self._event(lease.agent_id, "released", 0.0, lease.token, self.pid, self.host)

    def refused(self, lease: Lease) -> None:
        self._event(lease.agent_id, "refused_commit", 0.0, lease.token, self.pid, self.host)

    async def release(self, lease: Lease) -> None:
        """Give the lease up (if no commit did); safe to call twice, runs to the end if cancelled."""
        if lease.released:
            return
        op = functools.partial(rows.release, agent_id=lease.agent_id, token=lease.token)
        self.released(lease)
        with contextlib.suppress(Exception):  # a store closed under us: the lease expires on its own
            await asyncio.shield(self._writer.submit(lambda cur: op(cur)))

    @contextlib.asynccontextmanager
    async def hold(self, agent_id: str, name: str | None = None) -> AsyncIterator[Lease]:
        """The lease for a change that is not a turn (blocks, tools, settings, deletion)."""
        lease = await self.acquire(agent_id, name)
        try:
            yield lease
        finally:
            await self.release(lease)


def check_settings(ttl: Any, timeout: Any) -> None:
    """``lease_ttl`` and ``lease_timeout`` of ``letta_nb.connect``: positive seconds."""
    for name, value in (("lease_ttl", ttl), ("lease_timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e7:
            raise InvalidArgumentError(f"{name} must be a positive number of seconds (e.g. {name}=30), got {value!r}")


def _drop_ticket(cur: Any, agent_id: str, holder: str) -> None:
    cur.execute("DELETE FROM lease_waiters WHERE agent_id = ? AND holder = ?", (agent_id, holder))


def _holder(busy: Busy) -> dict[str, Any]:
    since = dt.datetime.fromtimestamp(busy.since, dt.timezone.utc) if busy.since else None
    return {"pid": busy.pid, "host": busy.host, "since": since}
