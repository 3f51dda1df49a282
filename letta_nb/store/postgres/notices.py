"""Change notices between processes on PostgreSQL without Redis: ``NOTIFY`` out, a ``LISTEN``ing connection in.

runtime/leases.py tells a runtime's subscribers (the widget's memory panel) when a turn or change of an agent
ends; with Redis, pub/sub carries those notices to other processes (runtime/redis_leases.py). Without it,
PostgreSQL does: each notice is sent with ``pg_notify`` after the change committed, and a runtime with
subscribers keeps one dedicated connection (outside the pool, which must not lose a connection to a
listener) that ``LISTEN``s and hands every other holder's notice to the subscribers.

Invariants:
- **Correctness never depends on a notice.** A notice only makes an idle display fresher; a lost one (no
  listener yet, a dropped connection) leaves it stale until it re-reads. The version check at turn start
  decides what a turn sees.
- **Off the step path.** Sending never delays a turn: notices queue and one task sends whatever queued
  while it was busy in one statement on a pooled connection (``pg_notify`` from ``unnest``), as the peek
  batcher does; a failed send is dropped and counted.
- **Nothing sent when nobody listens** (the common case: no widget open anywhere). Sending cost ~0.3 ms of
  CPU a turn (the step bench, NOTIFY on vs off), so a sender first counts the other runtimes' listener
  connections (``pg_stat_activity``, by :data:`LISTENER_NAME`) and trusts that count for
  :attr:`PgNotices.recheck_s` seconds: a kernel that just subscribed may miss its first second of notices.
- **The listener reconnects** (with backoff) when its connection is lost, and is closed with the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CHANNEL", "LISTENER_NAME", "PgNotices"]

CHANNEL = "letta_nb_changes"  # one channel per database: {"agent_id", "last_seq", "holder", "pid", "host", "at"}
LISTENER_NAME = "letta_nb_listen"  # the listener connection's application_name (pg_stat_activity)
_SEND = "SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n"
_LISTENERS = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
              "AND datname = current_database()")
_KEEPALIVE_S = 30.0  # how often an idle listener checks its connection (a silently dropped one)


class PgNotices:
    """The NOTIFY/LISTEN channel of one runtime: :meth:`publish` sends, :meth:`listen` delivers the other
    processes' notices. ``connect()`` opens the listener's own connection; ``pool`` sends."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], pool: Any, loop: asyncio.AbstractEventLoop):
        self._connect = connect
        self._pool = pool
        self._loop = loop  # the runtime's: delivery and sending run there
        self._outbox: list[str] = []
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._deliver: Callable[[dict[str, Any]], Any] | None = None
        self._holder: str | None = None
        self._closed = False
        self.listening = False  # the listener's connection is up and LISTENs
        self.recheck_s = 1.0  # how long a count of the other runtimes' listeners is trusted
        self._others = 0  # that count
        self._recheck_at = 0.0  # time.monotonic() when it is counted again
        self.sent = self.received = self.own = self.dropped = self.unheard = self.reconnects = 0

    def publish(self, notice: dict[str, Any]) -> None:
        """Send ``notice`` to every listening runtime (on the runtime's loop; never waits)."""
        if self._closed:
            return
        if not self._others and time.monotonic() < self._recheck_at:
            self.unheard += 1  # nobody else listens (counted less than recheck_s ago)
            return
        self._outbox.append(json.dumps(notice))
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send())

    async def _send(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                async with self._pool.acquire() as conn:
                    if time.monotonic() >= self._recheck_at:
                        listeners = int(await conn.fetchval(_LISTENERS, LISTENER_NAME))
                        self._others = max(listeners - (1 if self.listening else 0), 0)
                        self._recheck_at = time.monotonic() + self.recheck_s
                    if not self._others:
                        self.unheard += len(batch)
                        continue
                    await conn.execute(_SEND, CHANNEL, batch)
                self.sent += len(batch)
            except Exception:  # a lost notice only leaves a display stale a while
                self.dropped += len(batch)

    @property
    def idle(self) -> bool:
        """Nothing queued or being sent."""
        return not self._outbox and (self._sender is None or self._sender.done())

    def listen(self, deliver: Callable[[dict[str, Any]], Any], holder: str) -> None:
        """Start delivering other holders' notices to ``deliver`` (on the loop); callable from any thread."""
        self._deliver, self._holder = deliver, holder
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if not self._closed and (self._listener is None or self._listener.done()):
            self._listener = self._loop.create_task(self._listen())

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            notice = json.loads(payload)
            if not isinstance(notice, dict) or self._deliver is None:
                return
            if notice.get("holder") == self._holder:  # ours: delivered directly when it was made
                self.own += 1
                return
            self.received += 1
            self._deliver(notice)

    async def _listen(self) -> None:
        delay = 0.05
        while not self._closed:
            conn: Any = None
            try:
                conn = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set, lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening, delay = True, 0.05
                while not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), _KEEPALIVE_S)
                    if not lost.is_set():
                        await conn.execute("SELECT 1")  # raises if the connection went away silently
            except Exception:
                pass
            finally:
                self.listening = False
                if conn is not None:
                    conn.terminate()
            if not self._closed:
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        """Stop listening and sending (the runtime is closing); what is queued is sent first."""
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), 5)
        self._closed = True
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener


def _set(event: asyncio.Event, _conn: Any) -> None:
    """asyncpg's termination listener: the listener's connection is gone."""
    event.set()
