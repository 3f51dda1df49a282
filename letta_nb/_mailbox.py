"""Callbacks handed to an event loop from other threads, with one wakeup per batch.

Why: ``loop.call_soon_threadsafe`` writes a byte to the loop's self-pipe on every call, and that ``send`` releases
the GIL. With a hundred agents driven from the kernel's loop, a group commit that ends fifty turns settled fifty
caller futures: fifty writes, each a chance for the other thread to take the GIL and for this one to wait for it
back (a cross-CPU wakeup is ~50 us on a small VM). Measured on ``bench concurrency`` (issue 19): the hop between
the caller's loop and the runtime loop cost more than the turns' own work at 100 x 20. A :class:`Mailbox` queues
the callbacks and wakes its loop once until it has run them: a burst of fifty is one write.

Invariants: callbacks run on the loop in the order they were posted (from one thread; posts from several threads
interleave as they land); a callback posted while the batch runs is run by it or by the next one, never
dropped; one that raises goes to the loop's exception handler and the rest still run.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Mailbox", "mailbox"]


class Mailbox:
    """The cross-thread inbox of one loop (see the module docstring)."""

    __slots__ = ("_items", "_scheduled", "loop", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._items: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._scheduled = False

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon, from any thread. RuntimeError if the loop is closed (checked
        first: a drain still pending when the loop closed never ran, so the flag alone would drop this)."""
        if self.loop.is_closed():
            raise RuntimeError("Event loop is closed")
        self._items.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: what was posted will never run
                self._items.clear()
                self._scheduled = False
                raise

    def _drain(self) -> None:
        # Cleared first: a post landing from now on schedules another drain, or is popped by this one.
        self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:  # noqa: BLE001 - reported like an asyncio callback's error; the rest run
                self.loop.call_exception_handler(
                    {"message": f"letta_nb: a callback posted to the loop raised: {fn!r}", "exception": e})


_boxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox] = weakref.WeakKeyDictionary()
_boxes_lock = threading.Lock()


def mailbox(loop: asyncio.AbstractEventLoop) -> Mailbox:
    """The one mailbox of ``loop`` (made on first use): every poster to a loop shares it, so order holds."""
    box = _boxes.get(loop)
    if box is None:
        with _boxes_lock:
            box = _boxes.get(loop)
            if box is None:
                box = _boxes[loop] = Mailbox(loop)
    return box
