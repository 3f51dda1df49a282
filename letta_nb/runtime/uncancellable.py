"""Waiting for a future that must not be cancelled, as ``asyncio.shield`` does, for less.

A step's commit future (store/backend.py) resolves once its rows are durable, or refused; a turn stopped
while it waits must still learn which, because the write is queued and will land either way (agent_loop.py).
``asyncio.shield`` gives that with a second future and two callbacks, and costs one more pass of the event
loop before the turn resumes (issue 19: ~4 us of every step). :class:`Uncancellable` is awaited in place of
the future itself: the awaiting task parks on it as on any future (asyncio accepts an object with
``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback`` and ``cancel``), wakes when the future is
done, and a cancel of the task does not reach the future: ``cancel`` refuses, so the task raises
CancelledError at this await once the future is done, whose outcome (a value or its exception) then stays
readable through ``await future``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from contextvars import Context
from typing import Any, Generic, TypeVar

__all__ = ["Uncancellable"]

T = TypeVar("T")


class Uncancellable(Generic[T]):
    """``await Uncancellable(fut)``: ``fut``'s result; cancelling the awaiting task waits for ``fut`` to finish,
    then raises CancelledError here (``fut`` itself is never cancelled)."""

    __slots__ = ("_fut", "_asyncio_future_blocking")

    def __init__(self, fut: asyncio.Future[T]) -> None:
        self._fut = fut
        self._asyncio_future_blocking = False

    # ---- the part of the Future protocol a Task uses while it waits -------------------------------------
    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._fut.get_loop()

    def add_done_callback(self, fn: Callable[[asyncio.Future[T]], object], *, context: Context | None = None) -> None:
        self._fut.add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Callable[[asyncio.Future[T]], object]) -> int:
        return self._fut.remove_done_callback(fn)

    def cancel(self, msg: Any = None) -> bool:
        return False  # refused: the task raises CancelledError when the future is done (see the module docstring)

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return self._fut.done()

    def result(self) -> T:
        return self._fut.result()

    def __await__(self) -> Generator[Any, None, T]:
        if not self._fut.done():
            self._asyncio_future_blocking = True
            yield self
        return self._fut.result()
