"""Redis commands in batches: every command asked for while one batch is out joins the next pipeline.

Why: with Redis coordinating the leases (runtime/redis_leases.py) a turn sends two Redis commands (its start's
peek; its end's notice and waiter count), and a hundred agents talking at once sent them one by one. Each
was a pool checkout, a timeout wrapper, a send and a read on the runtime's loop: ~0.2 ms of its CPU a
command, the largest part of a turn with Redis (``bench concurrency --backend postgres --redis``, issue 12).
Sent as one pipeline (``transaction=False``: each command stands alone, as it did), a burst is one write
and one read loop, like the step writer's group commit and the PostgreSQL lease peeks (postgres/peeks.py):
no timer, whatever arrives during a round trip joins the next one, :data:`IN_FLIGHT` pipelines out at once.

Order: a caller awaits each command before its next, so a caller's commands run in the order it sent them;
commands of different callers had no order before (separate pooled connections) and have none now.

Scripts go as ``EVALSHA``. A Redis that lost its scripts (restarted) answers ``NOSCRIPT``: the script is
loaded and the command sent again, so callers never see it. A pipeline that fails as a whole (the server is
unreachable) fails each of its commands with that error, for the callers to handle as before (they retry
with backoff, or drop what only helps).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from letta_nb._batching import Batcher

__all__ = ["IN_FLIGHT", "RedisBatcher"]

IN_FLIGHT = 2  # pipelines out at once, each on its own pooled connection

_Request = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class RedisBatcher(Batcher[_Request]):
    """Sends commands of ``redis`` (a ``redis.asyncio.Redis``) in pipelines (letta_nb/_batching.py); scripts by
    name, as registered. Must be used from one event loop."""

    def __init__(self, redis: Any, scripts: dict[str, str]):
        super().__init__(IN_FLIGHT)
        self._redis = redis
        self._sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in scripts.items()}
        self._source = {self._sha[name]: src for name, src in scripts.items()}
        self._closed = False
        self.pipelines = 0
        self.commands = 0

    def script(self, name: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The registered script ``name`` run on ``keys`` and ``args`` (``EVALSHA``; loaded if Redis lacks it)."""
        return self.command("EVALSHA", self._sha[name], len(keys), *keys, *args)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any Redis command, as ``execute_command`` takes it; the future holds its reply or error."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_exception(ConnectionError("the Redis client is closed"))
        else:
            self._add((args, fut))
        return fut

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                replies = await self._send([args for args, _ in batch])
            except BaseException as e:
                self._fail((fut for _, fut in batch), e, "Redis call cancelled")
                if not isinstance(e, Exception):
                    raise
                continue
            self.pipelines += 1
            self.commands += len(batch)
            for (_, fut), reply in zip(batch, replies, strict=True):
                if fut.done():
                    continue
                if isinstance(reply, Exception):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One pipeline; commands whose script Redis lacks are sent again once it is loaded."""
        from redis.exceptions import NoScriptError

        replies = await self._pipeline(commands)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for sha in {commands[i][1] for i in missing}:
                await self._redis.script_load(self._source[sha])
            for i, reply in zip(missing, await self._pipeline([commands[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def aclose(self) -> None:
        """Send what is pending and wait for it (the runtime is closing; each pipeline is bounded by the
        client's socket timeout); what comes after is refused."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
