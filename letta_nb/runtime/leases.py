"""Cross-process leases: one process at a time writes an agent's turns, and a stale one cannot write at all.

Two kernels on one store each keep a picture of an agent (its session, ``last_seq``, caches); without
coordination both appended messages with the same ``seq`` (measured: 21 of 60 turns failed after the model
call was paid for, and each failed turn's user message was dropped). So every turn, and every change to an
agent (blocks, tools, settings, deletion, passages, uploaded files), runs under the agent's lease
(store/sqlite/leases.py):

- **Correctness comes from the commit, not from the lease.** The grant carries a fencing token and the
  agent's ``last_seq``/``version`` read in the same transaction; a stale session is reloaded before the model
  is called. Every step commit is a compare-and-set on that token and ``last_seq``: a turn whose lease
  expired (a paused process, a long GC) and was taken is refused without writing anything
  (``StaleCommitError``), however sure the process was that it held the lease. A turn then takes the lease
  again (an ordinary waiter), reloads and re-runs the refused step (agent_loop.py), so it is still stored
  whole.
- **Held only while writing.** A change that is slow to prepare (embedding a passage, chunking an upload)
  prepares outside the lease and holds it only around each commit (Runtime.agent_lease). The holder may
  re-enter: a tool of a running turn that files a passage into its own agent joins the turn's lease (its
  commit fenced by the turn's token) instead of queueing behind its own turn.
- **Leases queue, they do not bounce.** A process that finds the lease held waits its turn in arrival order
  (a ticket row per waiter; SQLite has no notifications, so it polls by reading, 1 to 10 ms apart, and writes
  only to take the lease or renew its ticket; a holder that sees a waiter at the end of its turn gives the
  lease up at once) and gets
  ``AgentBusyError`` naming the holder only after ``lease_timeout``. In-process turns already queue on the
  agent's lock (locks.py) before they reach this, so a process has at most one waiter per agent.
- **A dead holder blocks others only until its lease expires** (``lease_ttl``, 30 s by default). A live one
  renews it with every step commit and, during long model calls, every ``ttl/3`` from a heartbeat.
- **Cheap when alone:** a grant is one row write in the step writer's group commit (shared by every agent
  that starts a turn in the same loop iteration) and the release rides on the turn's last step commit. A kept
  lease is reused, and kept at the turn's end, with no read at all while the step writer's stamp (SQLite's
  ``PRAGMA data_version``, which moves when any other connection commits, plus the writer's own ops on the
  agent) is what it was when the row was last read: a waiter's ticket, a version bump, a takeover or a
  delete is always someone else's commit or an op of ours, so it is seen at the next turn (issue 19: two
  ~20 us reads a turn saved). The expiry it would have read is the last renewal that landed. On PostgreSQL
  (no such stamp) a turn reads its row once, at its start, while its model call runs: the model's first
  event waits for the read, and if the lease must be given up or the agent changed, the answer is dropped
  unseen and the turn runs again (agent_loop.py ``_Turn.confirm``; the read was a round trip before the model
  call, ~2-5 ms a turn at 100 agents). On both, whether anyone waits at a turn's end was answered by its last
  commit's fence (:meth:`AgentLeases.done`): a turn's end reads nothing.

``events`` records each grant, wait, expiry takeover and refused commit for ``probes.leases()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import inspect
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from letta_nb.errors import AgentBusyError, AgentNotFoundError, InvalidArgumentError, StaleCommitError
from letta_nb.runtime.change_notices import ChangeNotices
from letta_nb.runtime.lease_rows import TICKET_TTL, RowCoordination
from letta_nb.store.backend import Busy, Grant
from letta_nb.store.sqlite import leases as sqlite_rows

__all__ = ["AgentLeases", "Lease", "LeaseEvent", "check_settings", "make_leases"]


@dataclass
class Lease:
    """A lease this runtime holds: ``token`` fences its commits. ``busy`` while a turn or change uses it;
    an idle lease is kept for :data:`_GRACE` seconds so the agent's next turn reuses it without a write."""

    agent_id: str
    token: int
    last_seq: int
    version: int
    tools_version: int
    renewed_at: float
    busy: bool = True
    release_timer: asyncio.TimerHandle | None = None
    row_renewed_at: float = 0.0  # when a step commit last carried a renewal of the lease row (see until)
    # The gate (AgentLeases._unchanged): the writer's stamp taken just before the rows were last read, while
    # the fields above are still the rows' (None: read them again); the row's expiry as last known (a peek,
    # or a landed renewal); the renewal a step commit in flight carries (until -> renewed).
    seen: Any = None
    expires_at: float = 0.0
    renewing: float | None = None
    # the read of a kept lease handed to a turn before it is back (acquire's ``speculate``; AgentLeases.confirm)
    check: asyncio.Future[Any] | None = None


@dataclass(frozen=True)
class LeaseEvent:
    """One row of ``probes.leases()``."""

    agent_id: str
    # acquired | reused | waited | took_expired | renewed | released | refused_commit | recovered | restarted |
    # joined | timed_out
    event: str
    at: float  # time.time()
    wait_ms: float
    token: int | None
    holder_pid: int | None
    holder_host: str | None


_GRACE = 0.05  # an idle lease is given up this long after its turn (another turn of the agent reuses it)


class AgentLeases(ChangeNotices, RowCoordination):
    """The leases of one runtime (one holder identity) on its store."""

    def __init__(self, writer: Any, *, rows: Any = None, ttl: float = 30.0, timeout: float = 120.0,
                 history: int = 100_000, notices: Any = None):
        """``writer``: the store's step writer; ``rows``: its backend's lease rows (store/backend.py LeaseRows,
        SQLite's by default), run as the writer's ops and reads; ``notices``: the store's channel to other
        processes' subscribers (PostgreSQL's NOTIFY/LISTEN, store/postgres/notices.py), None for none."""
        check_settings(ttl, timeout)
        self._writer = writer
        self._rows = rows if rows is not None else sqlite_rows
        self.ttl, self.timeout = float(ttl), float(timeout)
        self.pid, self.host = os.getpid(), socket.gethostname()
        self.holder = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.events: collections.deque[LeaseEvent] = collections.deque(maxlen=history)
        self.held: dict[str, Lease] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[dict[str, Any]], Any]] = []
        self.notices = notices
        # The gate (see _unchanged) only where the lease rows are SQLite's, on the writer's inline connection.
        self._stamp_of: Callable[[str], Any] | None = getattr(writer, "stamp", None) if self._rows is sqlite_rows \
            else None
        # The fold (see done): a step commit's fence reads the waiters of these rows (both writers);
        # runtime/redis_leases.py turns it off: its waiters queue in Redis.
        self._waiters_of: Callable[[str, int], bool | None] | None = getattr(writer, "waiters", None)

    def _event(self, agent_id: str, event: str, wait_ms: float = 0.0, token: int | None = None,
               pid: int | None = None, host: str | None = None) -> None:
        self.events.append(LeaseEvent(agent_id, event, time.time(), wait_ms, token, pid, host))

    async def acquire(self, agent_id: str, name: str | None = None, *, speculate: bool = False) -> Lease:
        """The agent's lease: the one this runtime kept from the agent's last turn if it still holds and
        nobody waits for it (no read when the gate vouches for the rows, else one; no write), else granted in
        arrival order; AgentBusyError after ``timeout``.

        ``speculate`` (a turn's start): where that read is a round trip (PostgreSQL, Redis), a kept lease not
        near its expiry comes at once with the read in flight (``lease.check``), which the turn settles with
        :meth:`confirm` before it shows or does anything (the read overlaps its model call, issue 12)."""
        kept = self.held.get(agent_id)
        if kept is not None:
            if kept.release_timer is not None:
                kept.release_timer.cancel()
                kept.release_timer = None
            now = time.time()
            kept.busy = True  # claimed while the read is out (awaited on PostgreSQL): nothing releases it meanwhile
            margin = now + min(1.0, self.ttl / 3)  # a lease closer to its expiry than this is renewed by a grant
            if kept.expires_at > margin and self._unchanged(kept):
                self._event(agent_id, "reused", 0.0, kept.token, self.pid, self.host)
                return kept
            stamp = self._stamp(agent_id)
            if speculate and self._stamp_of is None and kept.expires_at > margin:
                kept.check = self._check_read(agent_id, now)
                return kept
            if self._reusable(kept, await self._peek(agent_id, now), margin, stamp, name):
                return kept
            kept.busy = False
            await self._give_up(kept)  # expired, taken, or someone is queued: go through the queue
        return await self._queue(agent_id, name)

    def _reusable(self, kept: Lease, row: Any, margin: float, stamp: Any, name: str | None) -> bool:
        """Whether a peek says the kept lease is ours past ``margin``, unawaited (then its fields are the row's)."""
        if row is None:
            self._forget(kept)
            raise AgentNotFoundError(name or kept.agent_id, [])
        if row[0] == kept.token and row[1] == self.holder and row[2] > margin and not row[6]:
            self._saw(kept, row, stamp)
            self._event(kept.agent_id, "reused", 0.0, kept.token, self.pid, self.host)
            return True
        return False

    async def confirm(self, lease: Lease, name: str | None = None) -> bool:
        """Settle the read a turn started on (``lease.check``, see :meth:`acquire`): True if the lease holds as
        kept (its fields now the row's) or no read was out; False if it was given up (expired, taken, awaited,
        or the read failed: the turn acquires it again, queued); AgentNotFoundError if the agent is gone."""
        check, lease.check = lease.check, None
        if check is None:
            return True
        try:
            row = await check
        except Exception:
            row = ()
        if row != () and self._reusable(lease, row, time.time() + min(1.0, self.ttl / 3), None, name):
            return True
        lease.busy = False
        await self._give_up(lease)
        return False

    async def _queue(self, agent_id: str, name: str | None) -> Lease:
        start = time.monotonic()
        delay, waited, ticket_at = 0.001, False, 0.0
        try:
            while True:
                result = await self._try(agent_id)
                if isinstance(result, Grant):
                    break
                if result is None:
                    raise AgentNotFoundError(name or agent_id, [])
                ticket_at = time.monotonic()
                if not waited:
                    waited = True
                    self._event(agent_id, "waited", 0.0, None, result.pid, result.host)
                # Poll by reading (~20 us, no write lock) until the lease looks free or expired, or our
                # ticket needs renewing; the hand-over between kernels is then a few ms, not the 50 ms a
                # write-per-poll backoff needed to keep the store's write lock free.
                while True:
                    if time.monotonic() - start > self.timeout:
                        self._event(agent_id, "timed_out", (time.monotonic() - start) * 1000, None, result.pid,
                                    result.host)
                        raise AgentBusyError(name or agent_id, _holder(result), time.monotonic() - start)
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, 0.01)
                    if await self._looks_free(agent_id) or time.monotonic() - ticket_at > TICKET_TTL / 3:
                        break
        except BaseException:
            if waited:  # leave the queue at once rather than when the ticket expires
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._drop_ticket(agent_id))
            raise
        wait_ms = (time.monotonic() - start) * 1000 if waited else 0.0
        self._event(agent_id, "took_expired" if result.took_expired else "acquired", wait_ms, result.token,
                    self.pid, self.host)
        lease = self.held[agent_id] = Lease(agent_id, result.token, result.last_seq, result.version,
                                            result.tools_version, time.time())
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        return lease

    async def _beat(self) -> None:
        """Renew the busy leases that no step commit renewed lately (long model calls and tools); one task
        for every lease of the runtime, and it ends when none is held."""
        while self.held:
            await asyncio.sleep(self.ttl / 3)
            now = time.time()
            for lease in [x for x in self.held.values() if x.busy and now - x.renewed_at > self.ttl / 3]:
                if await self._renew(lease, now + self.ttl):  # False: lost; the turn's next commit is refused
                    lease.renewed_at, lease.expires_at = now, now + self.ttl
                    self._event(lease.agent_id, "renewed", 0.0, lease.token, self.pid, self.host)

    def until(self, lease: Lease | None = None) -> float | None:
        """When a lease renewed now expires: a step commit carries it and renews ``lease``'s row to it. None:
        a commit renewed that row less than a tenth of the ttl ago, so its expiry is still >= 0.9 ttl away
        and this commit skips the renewal (an UPDATE a step saved: a turn's steps are milliseconds apart).
        The heartbeat's clock (``renewed_at``) is :meth:`renewed`'s, as before."""
        now = time.time()
        if lease is not None:
            if now - lease.row_renewed_at < self.ttl / 10:
                lease.renewing = None  # this commit carries none (an earlier one that did never landed)
                return None
            lease.row_renewed_at = now
            lease.renewing = now + self.ttl
            return lease.renewing
        return now + self.ttl

    def renewed(self, lease: Lease, last_seq: int | None = None) -> None:
        """A commit under ``lease`` landed (and renewed it); ``last_seq``: the agent's, as that commit left it
        (what a joined commit is fenced on, see :meth:`join`)."""
        lease.renewed_at = time.time()
        if lease.renewing is not None:  # the commit carried the renewal :meth:`until` gave it
            lease.expires_at, lease.renewing = lease.renewing, None
        if last_seq is not None:
            lease.last_seq = last_seq

    def recovered(self, lease: Lease, wait_ms: float) -> None:
        """A turn whose commit was refused holds the agent's lease again (``lease``), ``wait_ms`` after the
        refusal, and re-runs the refused step against the reloaded agent."""
        self._event(lease.agent_id, "recovered", wait_ms, lease.token, self.pid, self.host)

    def restarted(self, agent_id: str, token: int) -> None:
        """A turn dropped its model answer unseen to run again: its lease's read (:meth:`confirm`) said so."""
        self._event(agent_id, "restarted", 0.0, token, self.pid, self.host)

    def join(self, agent_id: str) -> Lease:
        """The lease of the agent's running turn, for a commit made by one of that turn's tools (the turn
        holds the agent's lock, so queueing would wait for itself). StaleCommitError if the turn has lost it:
        the turn's own commit is refused too, and it re-runs the step, this tool included."""
        lease = self.held.get(agent_id)
        if lease is None or not lease.busy:
            raise StaleCommitError(agent_id)
        self._event(agent_id, "joined", 0.0, lease.token, self.pid, self.host)
        return lease

    def refused(self, lease: Lease) -> None:
        """A commit under ``lease`` was refused: it is not ours any more."""
        self._event(lease.agent_id, "refused_commit", 0.0, lease.token, self.pid, self.host)
        self._forget(lease)

    def done(self, lease: Lease) -> None:
        """The turn or change is over: give the lease up now if another kernel waits for it, else keep it
        idle for a moment (the agent's next turn here reuses it) and then give it up.

        Whether anyone waits was read by the fence of this turn's last landed commit (the fold: on PostgreSQL a
        round trip a turn saved, issue 12; on SQLite a ``PRAGMA data_version``, issue 19), else by a peek
        unless the gate vouches that nothing changed. A waiter queued after that
        statement is no worse off than one queued just after a peek: the grace timer gives the lease up, or
        the agent's next turn here peeks at its start (acquire always reads on PostgreSQL) and finds it;
        a deleted agent (its deletion queues for the lease) likewise. So a waiter is served within a turn."""
        _drop_check(lease)  # a turn that ended before it settled its read (an error, a cancel) reads again below
        if self.held.get(lease.agent_id) is not lease:
            return
        lease.busy = False
        loop = asyncio.get_running_loop()
        self._changed(lease)
        stamp: Any = None
        try:
            if self._waiters_of is not None and (waiting := self._waiters_of(lease.agent_id, lease.token)) is not None:
                self._keep_or_give_up(lease, waiting)  # the turn's commit read it: nothing to read now
                return
            if self._unchanged(lease):  # nobody queued (a ticket is another process's commit), not deleted
                self._keep_or_give_up(lease, False)
                return
            stamp = self._stamp(lease.agent_id)
            row = self._peek_now(lease.agent_id)
        except Exception:  # the store is closing: the timer (or close()) gives it up
            row = ()
        if inspect.isawaitable(row):  # an async backend (PostgreSQL): decide once the read is back
            loop.create_task(self._settle(lease, row))
            return
        if row and row[0] == lease.token and row[1] == self.holder:
            self._saw(lease, row, stamp)
        self._keep_or_give_up(lease, _gone_or_awaited(row))

    async def _settle(self, lease: Lease, pending: Awaitable[Any]) -> None:
        try:
            row = await pending
        except Exception:
            row = ()
        if not lease.busy and self.held.get(lease.agent_id) is lease:  # not reused meanwhile
            self._keep_or_give_up(lease, _gone_or_awaited(row))

    def _keep_or_give_up(self, lease: Lease, now: bool) -> None:
        """Give the idle lease up ``now`` (someone waits, or the agent is gone), else after :data:`_GRACE`."""
        loop = asyncio.get_running_loop()
        if now:
            loop.create_task(self._give_up(lease))
            return
        lease.release_timer = loop.call_later(_GRACE, lambda: loop.create_task(self._give_up(lease)))

    # ---- the gate: a kept lease reused with no read while nothing can have changed its rows -------------
    def _stamp(self, agent_id: str) -> Any:
        """The step writer's stamp of the agent's rows (store/sqlite/step_writer.py StepWriter.stamp): it
        changes whenever another connection commits, or this process commits an op or an unfenced write on
        the agent. None where the backend has no such stamp (PostgreSQL, Redis): every check reads."""
        return None if self._stamp_of is None else self._stamp_of(agent_id)

    def _unchanged(self, lease: Lease) -> bool:
        """Whether the lease's fields are still its rows' (``PRAGMA data_version`` gate): same token and
        holder, ``last_seq`` as our commits left it, same version and tools counter, the expiry we renewed it
        to, no waiter. Each of those changes is a commit by another connection (another process's ticket,
        grant or delete; a version bump by any process, this one's engine included) or an op of ours, and
        either changes the stamp."""
        return lease.seen is not None and self._stamp(lease.agent_id) == lease.seen  # seen stays None with no stamp

    @staticmethod
    def _saw(lease: Lease, row: Any, stamp: Any) -> None:
        """A peek (read after ``stamp`` was taken) found the lease still ours: its fields are the row's."""
        lease.last_seq, lease.version, lease.tools_version, lease.expires_at = row[3], row[4], row[5], row[2]
        lease.seen = stamp

    async def _give_up(self, lease: Lease) -> None:
        """Release an idle lease (its grace ran out, or it cannot be reused)."""
        if lease.busy:  # a turn reused it after the timer fired
            return
        self._forget(lease)
        with contextlib.suppress(Exception):  # a store closed under us: the lease expires on its own
            await asyncio.shield(self._release(lease))
        self._event(lease.agent_id, "released", 0.0, lease.token, self.pid, self.host)

    def _forget(self, lease: Lease) -> None:
        _drop_check(lease)
        if lease.release_timer is not None:
            lease.release_timer.cancel()
            lease.release_timer = None
        if self.held.get(lease.agent_id) is lease:
            del self.held[lease.agent_id]

    async def start(self) -> None:
        """Check the coordination backend is reachable (lease rows: the store already is)."""

    async def close(self) -> None:
        """Give up every lease (the runtime is closing)."""
        for lease in list(self.held.values()):
            lease.busy = False
            await self._give_up(lease)
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    @contextlib.asynccontextmanager
    async def hold(self, agent_id: str, name: str | None = None) -> AsyncIterator[Lease]:
        """The lease for a change that is not a turn (blocks, tools, settings, deletion, passages, files). A
        commit in the block that is refused (StaleCommitError) means the lease was lost: it is forgotten."""
        lease = await self.acquire(agent_id, name)
        try:
            yield lease
        except StaleCommitError:
            if self.held.get(agent_id) is lease:
                self.refused(lease)
            raise
        finally:
            self.done(lease)


def make_leases(store: Any, redis_url: str | None = None, *, ttl: float = 30.0, timeout: float = 120.0) -> AgentLeases:
    """The leases of a runtime on ``store``: its backend's lease rows, or Redis (``redis_url``, a PostgreSQL
    store only; runtime/redis_leases.py) fenced by those rows."""
    if redis_url is None:
        return AgentLeases(store.writer, rows=store.lease_rows, ttl=ttl, timeout=timeout,
                           notices=getattr(store, "notices", None))
    if not isinstance(redis_url, str) or "://" not in redis_url:
        raise InvalidArgumentError(f"redis_url must be a Redis URL such as 'redis://host:6379/0', got "
                                   f"{type(redis_url).__name__ if not isinstance(redis_url, str) else 'text without ://'}")
    from letta_nb.runtime.redis_leases import RedisAgentLeases

    return RedisAgentLeases(store.writer, store.lease_rows, redis_url, ttl=ttl, timeout=timeout)


def check_settings(ttl: Any, timeout: Any) -> None:
    """``lease_ttl`` and ``lease_timeout`` of ``letta_nb.connect``: positive seconds."""
    for name, value in (("lease_ttl", ttl), ("lease_timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e7:
            raise InvalidArgumentError(f"{name} must be a positive number of seconds (e.g. {name}=30), got {value!r}")


def _drop_check(lease: Lease) -> None:
    """Drop a lease's unsettled read (:meth:`AgentLeases.acquire`'s ``speculate``), its outcome retrieved."""
    check, lease.check = lease.check, None
    if check is not None and not check.cancel() and not check.cancelled():  # done: retrieve what it raised,
        check.exception()  # or asyncio logs it as never retrieved


def _gone_or_awaited(row: Any) -> bool:
    """A peek's answer (``()``: none, the store is closing) says the agent is gone or someone waits."""
    return row is None or bool(row and row[6])


def _holder(busy: Busy) -> dict[str, Any]:
    since = dt.datetime.fromtimestamp(busy.since, dt.timezone.utc) if busy.since else None
    return {"pid": busy.pid, "host": busy.host, "since": since}
