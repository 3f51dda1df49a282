"""Requests batched by round trip: whatever is asked for while a batch is out joins the next one.

Why: on a loaded 2-core host a round trip to a server (PostgreSQL, Redis) is a wake-up of a server process and of
this loop, and a hundred agents talking at once ask for the same kind of thing (a lease peek, a Redis command) at
about the same time. Sent one by one, each pays its own round trip and its own share of the loop's CPU; batched
like the step writer's group commit, a burst is one. No timer: a lone request goes at once (a drain starts for
it in the next pass of the loop), and requests wait only while :attr:`in_flight` drains are out, each on its own
connection. Used by the PostgreSQL lease peeks (store/postgres/peeks.py) and the Redis commands
(runtime/redis_batch.py); each says what one batch is (:meth:`Batcher._run`).

Must be used from one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

__all__ = ["Batcher"]

R = TypeVar("R")


class Batcher(Generic[R]):
    """Pending requests of type ``R``, drained by up to ``in_flight`` tasks at once (see the module docstring)."""

    def __init__(self, in_flight: int):
        self.in_flight = in_flight
        self._pending: list[R] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: asyncio.Task[None] | None = None  # made, not yet run: it takes what is pending then

    def _add(self, request: R) -> None:
        """Queue ``request`` and start a drain for it, unless one is about to start or all are out."""
        self._pending.append(request)
        self._kick(asyncio.get_running_loop())

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending and self._starting is None and len(self._tasks) < self.in_flight:
            task = self._starting = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._starting is task:  # cancelled before it ran
            self._starting = None
        if not task.cancelled():  # requests that came as the drains were ending: nobody else takes them
            self._kick(task.get_loop())

    async def _drain(self) -> None:
        self._starting = None
        await self._run()

    async def _run(self) -> None:
        """Take what is pending, a batch at a time (``batch, self._pending = self._pending, []``), until nothing
        is; settle each request of a batch with its answer or the batch's error."""
        raise NotImplementedError

    @staticmethod
    def _fail(futures: Iterable[asyncio.Future[Any]], error: BaseException, stopped: str) -> None:
        """Settle a failed batch's futures with ``error`` (a cancellation as ``RuntimeError(stopped)``: a waiter
        is not itself cancelled); the drain re-raises a cancellation itself."""
        for fut in futures:
            if not fut.done():
                fut.set_exception(error if isinstance(error, Exception) else RuntimeError(stopped))
