"""Agent leases coordinated through Redis, fenced by PostgreSQL: ``letta_nb.connect(url, redis_url=...)``.

What Redis adds over lease rows (runtime/leases.py): a grant, a renewal and a hand-over cost one Redis round
trip (~0.5 ms) instead of a write in the store; waiters poll Redis, not the database; and every process's
changes reach every other process's idle displays by pub/sub (:meth:`AgentLeases.subscribe`).

What Redis does **not** decide: whether a write lands. Redis can lose keys (a restart without persistence,
a failover, an eviction) and a paused process cannot tell. So:

- The lease is ``SET key value NX PX ttl`` in a Lua script, with a fencing token from ``INCR``; the value
  names the token and the holder, and only the holder releases it (compare-and-delete) or renews it
  (compare-and-pexpire).
- Each grant is then **installed** in the agent's PostgreSQL lease row (store/postgres/leases.py
  ``install``) in the step writer's group commit: the row takes the token only if it is above the row's,
  and the agent's ``last_seq``/``version`` are read under that row lock. Every step commit is fenced on the
  row's token (the compare-and-set of runtime/leases.py), so two processes that both believe Redis gave them
  the lease cannot both write: the later grant's token is higher, and the earlier holder's next commit is
  refused (its turn takes the lease again and re-runs the step). A Redis that restarted with its counter at
  0 hands out tokens below the row's: the install refuses them, the counter is raised past the row's token,
  and the grant is tried again.
- Waiters queue in arrival order in a sorted set (score: a per-agent ``INCR`` ticket number); each waiter's
  ticket has an expiry in a hash beside it, renewed as it waits, so a killed waiter drops out after
  ``TICKET_TTL``. Expiry is judged by the Redis server's clock (``TIME``), not the hosts'.
- Redis unreachable: a turn that needs a lease retries with backoff until ``lease_timeout`` and then fails
  with StoreError naming the server (never its password); renewals and releases that fail are dropped
  (the key expires, the fence keeps correctness; its holder is granted its own key again at once); the
  pub/sub listener reconnects. A command on a connection from before a restart is retried once.

Every process of a store must use the same Redis (a process on lease rows alone would only meet the
others at the fence: correct, but turns would be refused and re-run instead of queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import urllib.parse
from typing import Any

from letta_nb.errors import InvalidArgumentError, StoreError
from letta_nb.runtime.lease_rows import TICKET_TTL
from letta_nb.runtime.leases import AgentLeases, Lease
from letta_nb.runtime.redis_batch import RedisBatcher
from letta_nb.store.backend import Busy, Grant

__all__ = ["CHANNEL", "RedisAgentLeases", "redis_display"]

CHANNEL = "letta_nb:changes"  # one channel: {"agent_id", "last_seq", "holder", "pid", "host", "at"} as JSON

# KEYS: lease, queue (zset holder -> ticket no.), ticket expiries (hash holder -> ms), token counter,
# ticket counter. ARGV: holder, pid, host, since, ttl ms, ticket ttl ms.
# {1, token}: granted; {0, value, pttl}: held by value's holder; {0}: free, but an older waiter goes first.
# A key that already names ARGV[1] is granted to it again whatever the queue: it is this holder's own, left by
# a release that never reached Redis. Queueing behind a waiter that itself waits for that key would hold both
# until the key expired (a whole ttl: it happened after a Redis restart, issue 12).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if tonumber(redis.call('HGET', KEYS[3], m) or '0') < now then
    redis.call('ZREM', KEYS[2], m); redis.call('HDEL', KEYS[3], m)
  end
end
local cur = redis.call('GET', KEYS[1])
local mine = cur and string.sub(cur, string.find(cur, '|', 1, true) + 1, -1):match('^[^|]*') == ARGV[1]
local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if (cur and not mine) or (not cur and first and first ~= ARGV[1]) then
  if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), ARGV[1])
  end
  redis.call('HSET', KEYS[3], ARGV[1], now + tonumber(ARGV[6]))
  redis.call('PEXPIRE', KEYS[2], 4 * tonumber(ARGV[6])); redis.call('PEXPIRE', KEYS[3], 4 * tonumber(ARGV[6]))
  if cur and not mine then return {0, cur, redis.call('PTTL', KEYS[1])} end
  return {0}
end
local token = redis.call('INCR', KEYS[4])
local value = token .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
if mine then redis.call('SET', KEYS[1], value, 'XX', 'PX', ARGV[5])
else redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[5]) end
redis.call('ZREM', KEYS[2], ARGV[1]); redis.call('HDEL', KEYS[3], ARGV[1])
return {1, token}
"""
# KEYS: lease. ARGV: "token|holder|". Only the holder's own value is touched.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease, ticket expiries. -> {value or false, pttl, live waiters}
_PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = 0
local kv = redis.call('HGETALL', KEYS[2])
for i = 2, #kv, 2 do if tonumber(kv[i]) >= now then live = live + 1 end end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), live}
"""
# KEYS: token counter. ARGV: a token the counter must reach (PostgreSQL's row holds it).
_RAISE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
_DROP = "redis.call('ZREM', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1]); return 1"
# A turn's end in one command: publish its notice (ARGV[2], '' for none) on ARGV[1], count the live waiters.
# KEYS: ticket expiries. -> live waiters
_END = """
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = 0
local kv = redis.call('HGETALL', KEYS[1])
for i = 2, #kv, 2 do if tonumber(kv[i]) >= now then live = live + 1 end end
return live
"""


def _ignore(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a failed publish is not an error worth a log line


def redis_display(url: str) -> str:
    """The URL without its user and password (for errors and displays)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname and f"{parts.hostname}:{parts.port or 6379}"
                                                  or parts.netloc.rpartition("@")[2]))


def _keys(agent_id: str) -> dict[str, str]:
    base = f"letta_nb:{{{agent_id}}}"  # one hash slot per agent (Redis Cluster runs the scripts)
    return {k: f"{base}:{k}" for k in ("lease", "queue", "tickets", "token", "ticket_no")}


def _parse(value: str) -> tuple[int, str, int | None, str | None, float | None]:
    token, holder, pid, host, since = (value.split("|") + ["", "", "", ""])[:5]
    return int(token), holder, int(pid) if pid.isdigit() else None, host or None, float(since) if since else None


class RedisAgentLeases(AgentLeases):
    """:class:`AgentLeases` whose grants, queue and renewals live in Redis; each grant installed in (and each
    commit fenced by) the store's lease row. See the module docstring."""

    def __init__(self, writer: Any, rows: Any, redis_url: str, **kwargs: Any):
        if not hasattr(rows, "install"):
            raise InvalidArgumentError("redis_url needs a PostgreSQL store (letta_nb.connect('postgresql://...', "
                                       "redis_url=...)): kernels on a SQLite file share one machine, and its lease "
                                       "rows already coordinate them. Drop redis_url, or use a PostgreSQL URL.")
        super().__init__(writer, rows=rows, **kwargs)
        self._waiters_of = None  # waiters queue in Redis, not in the rows a commit reads (no fold in done)
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
        except ImportError:  # pragma: no cover - the postgres extra installs it
            raise InvalidArgumentError("redis_url needs the redis package: %pip install 'letta-nb[postgres]'") from None
        self.redis_url = redis_display(redis_url)
        try:
            # A pooled connection from before a Redis restart fails its next command ("Connection closed by
            # server") before sending it: retried once on a new connection, so no caller sees it. Without
            # this a release that met one was lost, and its key held the agent for a whole ttl (below).
            self._redis: Any = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5,
                                                       socket_connect_timeout=5, retry=Retry(NoBackoff(), 1),
                                                       retry_on_error=[RedisConnectionError])
        except ValueError as e:
            raise InvalidArgumentError(f"redis_url: {e} (expected e.g. redis://host:6379/0)") from None
        self._batch = RedisBatcher(self._redis, {"acquire": _ACQUIRE, "release": _RELEASE, "renew": _RENEW,
                                                 "peek": _PEEK, "raise": _RAISE, "drop": _DROP, "end": _END})
        self._unsent: dict[str, str] = {}  # notices of ended turns not yet published (see _changed)
        self._loop = asyncio.get_running_loop()  # the runtime's: subscribers and the listener run there
        self._listener: asyncio.Task[None] | None = None
        self.redis_errors = 0

    async def start(self) -> None:
        """Reach the server now, so a wrong ``redis_url`` fails at connect."""
        from redis.exceptions import RedisError

        try:
            await self._redis.ping()
        except (RedisError, OSError) as e:
            raise StoreError(f"could not reach Redis at {self.redis_url}: {type(e).__name__}: {e}. Check that it "
                             "runs and that redis_url's host, port and password are right.") from None

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._batch.script(name, keys, args)

    async def _try(self, agent_id: str) -> Grant | Busy | None:
        from redis.exceptions import RedisError

        start, delay = time.monotonic(), 0.01
        while True:
            try:
                return await self._try_once(agent_id)
            except (RedisError, OSError) as e:  # restarting, failing over: wait for it, up to lease_timeout
                self.redis_errors += 1
                self._event(agent_id, "redis_error")
                if time.monotonic() - start > self.timeout:
                    raise StoreError(f"Redis at {self.redis_url} stayed unreachable for {self.timeout:g} s "
                                     f"(lease_timeout): {type(e).__name__}: {e}. Nothing of this turn was "
                                     "written; run it again once Redis is back.") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _try_once(self, agent_id: str) -> Grant | Busy | None:
        k = _keys(agent_id)
        while True:
            got = await self._call("acquire", [k["lease"], k["queue"], k["tickets"], k["token"], k["ticket_no"]],
                                   [self.holder, self.pid, self.host, f"{time.time():.3f}",
                                    int(self.ttl * 1000), int(TICKET_TTL * 1000)])
            if not got[0]:
                if len(got) == 1:
                    return Busy(None, None, None, None, None)
                _, holder, pid, host, since = _parse(got[1])
                return Busy(holder, pid, host, since, time.time() + max(int(got[2]), 0) / 1000)
            token = int(got[1])
            try:
                installed = await self._writer.submit(functools.partial(
                    self._rows.install, agent_id=agent_id, token=token, holder=self.holder, pid=self.pid,
                    host=self.host, now=time.time(), ttl=self.ttl))
            except BaseException:  # cancelled or failed: do not leave Redis holding it for a whole ttl
                await asyncio.shield(self._let_go(agent_id, token))
                raise
            if isinstance(installed, Grant):
                return installed
            await self._let_go(agent_id, token)
            if installed is None:
                return None
            # Redis's counter is behind the store's (Redis lost it): move it past, then take the lease again.
            await self._call("raise", [k["token"]], [installed])

    async def _let_go(self, agent_id: str, token: int) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._call("release", [_keys(agent_id)["lease"]], [f"{token}|{self.holder}|"])

    async def _redis_peek(self, agent_id: str) -> tuple[str | None, int, int]:
        k = _keys(agent_id)
        value, pttl, live = await self._call("peek", [k["lease"], k["tickets"]], [])
        return value or None, int(pttl), int(live)

    async def _peek(self, agent_id: str, now: float) -> Any:
        """The store's state of the agent (a batched read, postgres/peeks.py) and Redis's lease, asked at once."""
        from redis.exceptions import RedisError

        row = self._writer.read(self._peek_op(agent_id, now))
        try:
            value, pttl, live = await self._redis_peek(agent_id)
        except (RedisError, OSError):
            value, pttl, live = None, -2, 0  # unknown: not reusable; the queue decides
        finally:
            state = await row
        if state is None:
            return None
        if value is None:
            return (None, None, None, *state[3:6], bool(live))
        token, holder, *_ = _parse(value)
        return (token, holder, now + max(pttl, 0) / 1000, *state[3:6], bool(live))

    def _check_read(self, agent_id: str, now: float) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._peek(agent_id, now))  # the store's row and Redis's lease

    def _peek_now(self, agent_id: str) -> Any:
        return self._end(agent_id, self._unsent.pop(agent_id, ""))

    async def _end(self, agent_id: str, notice: str) -> Any:
        """Enough of a peek for :meth:`done` (does anyone wait?), from Redis alone, in the command that
        publishes the turn's notice."""
        live = await self._call("end", [_keys(agent_id)["tickets"]], [CHANNEL, notice])
        return (None, None, None, 0, 0, 0, bool(live))

    async def _looks_free(self, agent_id: str) -> bool:
        from redis.exceptions import RedisError

        try:
            return not await self._batch.command("EXISTS", _keys(agent_id)["lease"])
        except (RedisError, OSError):
            return True  # try again: _try waits for Redis with backoff

    async def _renew(self, lease: Lease, expires_at: float) -> bool:
        from redis.exceptions import RedisError

        try:
            ms = max(int((expires_at - time.time()) * 1000), 1)
            return bool(await self._call("renew", [_keys(lease.agent_id)["lease"]],
                                         [f"{lease.token}|{self.holder}|", ms]))
        except (RedisError, OSError):
            return False  # the key may be gone; the fence decides whether our next commit lands

    def renewed(self, lease: Lease, last_seq: int | None = None) -> None:
        """A step commit renews the store's row, not Redis's key: the heartbeat keeps renewing that."""
        if last_seq is not None:
            lease.last_seq = last_seq

    async def _release(self, lease: Lease) -> None:
        # The row first: the next holder's install then sees an orderly hand-over, not a takeover.
        with contextlib.suppress(Exception):
            await self._writer.submit(functools.partial(self._rows.release, agent_id=lease.agent_id,
                                                        token=lease.token))
        await self._let_go(lease.agent_id, lease.token)

    async def _drop_ticket(self, agent_id: str) -> None:
        k = _keys(agent_id)
        await self._call("drop", [k["queue"], k["tickets"]], [self.holder])

    # ---- pub/sub --------------------------------------------------------------------------------------
    def _changed(self, lease: Lease) -> None:
        """This process's subscribers hear it now; other processes' with the turn's end command (:meth:`_end`,
        which done() sends right after), or alone by :meth:`_publish_unsent` if nothing took it."""
        notice = {"agent_id": lease.agent_id, "last_seq": lease.last_seq, "holder": self.holder, "pid": self.pid,
                  "host": self.host, "at": time.time()}
        self._notify(notice)
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._publish_unsent)
        self._unsent[lease.agent_id] = json.dumps(notice)

    def _publish_unsent(self) -> None:
        for notice in self._unsent.values():  # a lost notice only leaves a display stale a while
            self._batch.command("PUBLISH", CHANNEL, notice).add_done_callback(_ignore)
        self._unsent.clear()

    def subscribe(self, callback: Any) -> Any:
        unsubscribe = super().subscribe(callback)
        self._loop.call_soon_threadsafe(self._listen_soon)  # callable from any thread (a widget's)
        return unsubscribe

    def _listen_soon(self) -> None:
        if self._subscribers and (self._listener is None or self._listener.done()):
            self._listener = self._loop.create_task(self._listen())

    async def _listen(self) -> None:
        """Deliver other processes' notices to this process's subscribers; reconnects after Redis fails."""
        from redis.exceptions import RedisError

        delay = 0.05
        while self._subscribers:
            try:
                async with self._redis.pubsub() as ps:
                    await ps.subscribe(CHANNEL)
                    delay = 0.05
                    while self._subscribers:
                        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if msg and msg.get("type") == "message":
                            notice = json.loads(msg["data"])
                            if notice.get("holder") != self.holder:  # our own were delivered directly
                                self._notify(notice)
            except (RedisError, OSError, ValueError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def close(self) -> None:
        await super().close()
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()
        self._publish_unsent()
        await self._batch.aclose()
        with contextlib.suppress(Exception):
            await self._redis.aclose()
