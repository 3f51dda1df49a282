"""The runtime thread: one asyncio loop in a daemon thread that owns every DB, model and tool call.

Why a thread: ipykernel already runs a loop in the main thread, and magics and widget callbacks are
synchronous; running our own loop beside it means a blocking ``client.agents.messages.create`` works in
a cell, in a widget callback and in a plain script alike, and the kernel's loop stays free to deliver
widget messages while a step runs.

Sync callers use :meth:`RuntimeThread.run`: Ctrl-C (KeyboardInterrupt, a kernel interrupt) cancels the
coroutine on the runtime loop, waits for its cleanup (which commits what should be kept) and re-raises.
The main thread waits in short slices (:func:`wait_interruptibly`), because ``_thread.interrupt_main()`` (how
ipykernel interrupts on Windows) sends no signal: a blocked lock wait never notices it, the interpreter does
between two slices. Async callers on another loop ``await`` :meth:`RuntimeThread.run_async`; cancelling them
cancels the work.

Shutdown: a runtime still open when the main thread finishes is closed by a ``threading`` exit hook, which runs
before ``concurrent.futures`` shuts its pools down (closing a store still hands work to threads; from a plain
``atexit`` hook that failed with "cannot schedule new futures after interpreter shutdown"). Any later close,
e.g. the notebook extension's ``atexit`` hook, finds it closed and does nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.thread  # registers its exit hook now, so ours (registered later) runs before it
import contextlib
import logging
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from letta_nb._mailbox import Mailbox, mailbox
from letta_nb.errors import LettaNBError, RuntimeClosedError
from letta_nb.runtime import gc_policy

__all__ = ["RuntimeThread", "Job", "wait_interruptibly"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: How long the main thread blocks at a time: the latency of noticing ``_thread.interrupt_main()``.
WAIT_SLICE_S = 0.05


def wait_interruptibly(get: Callable[[float | None], T], timeout: float | None = None) -> T:
    """``get(timeout)`` (a Future's ``result``, a queue's ``get``) that a main-thread interrupt can break into.

    In the main thread it waits in slices of :data:`WAIT_SLICE_S`, so KeyboardInterrupt from
    ``_thread.interrupt_main()`` is raised within one slice; other threads never receive it and wait in one
    call. ``get`` signals an elapsed slice with ``TimeoutError`` or ``queue.Empty``.
    """
    if threading.current_thread() is not threading.main_thread():
        return get(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = WAIT_SLICE_S if deadline is None else max(0.0, min(WAIT_SLICE_S, deadline - time.monotonic()))
        try:
            return get(step)
        except (TimeoutError, queue.Empty):
            if deadline is not None and time.monotonic() >= deadline:
                raise


_open: set[RuntimeThread] = set()  # runtimes the exit hook closes (each removes itself when closed)
_hook_lock = threading.Lock()
_hook_registered = False
if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads: nothing of ours to close
    os.register_at_fork(after_in_child=_open.clear)


def _close_open_runtimes() -> None:
    for runtime in list(_open):
        runtime._close_at_exit()


def _register_exit_hook() -> None:
    global _hook_registered
    with _hook_lock:
        if _hook_registered:
            return
        register = getattr(threading, "_register_atexit", None)  # CPython >= 3.9; private but stable
        try:
            if register is None:
                import atexit

                atexit.register(_close_open_runtimes)
            else:
                register(_close_open_runtimes)
        except RuntimeError:  # created while the interpreter is already shutting down: nothing to hook
            return
        _hook_registered = True


#: Longest a busy runtime loop goes without asking the kernel for I/O events (see _BusyPollSelector).
BUSY_POLL_S = 0.0005


class _BusyPollSelector(selectors.DefaultSelector):
    """The platform's selector, minus the zero-timeout polls of a busy loop: at most one per :data:`BUSY_POLL_S`.

    asyncio asks the selector for I/O events on every pass of its loop, with a zero timeout when callbacks
    are already waiting: a system call (~5-15 us on this kind of host) that almost always finds nothing, ~7
    a turn (issue 19: ``bench step`` makes 1.8 a turn with this selector, was 7.0). A zero-timeout poll
    within :data:`BUSY_POLL_S` of the last real one returns no events instead; the loop then runs its ready
    callbacks and due timers as usual. Nothing is lost or reordered: a file descriptor stays ready until it
    is read, so its event comes with the next real poll, at most :data:`BUSY_POLL_S` later, and at once when
    the loop has nothing else to do (a non-zero timeout always polls). Thread-safe wakeups need no poll:
    ``call_soon_threadsafe`` puts its callback in the ready queue itself.
    """

    _polled_at = float("-inf")
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            now = self.clock()
            if now - self._polled_at < BUSY_POLL_S:
                return []
            self._polled_at = now
            return super().select(timeout)
        events = super().select(timeout)
        self._polled_at = self.clock()
        return events


class RuntimeThread:
    def __init__(self, name: str = "letta_nb-runtime"):
        self.loop = asyncio.SelectorEventLoop(_BusyPollSelector())
        self._box = mailbox(self.loop)  # work from other threads: one wakeup per burst (_mailbox.py)
        self._ready = threading.Event()
        self._closed = False
        self._closing = False  # close() began: new work is refused, work in flight that fails says why
        self._finalizer: Callable[[], Coroutine[Any, Any, Any]] | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()
        _register_exit_hook()
        _open.add(self)
        gc_policy.runtime_opened()  # fewer collector passes while it serves turns (runtime/gc_policy.py)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T], *, closing: bool = False,
               caller: asyncio.Future[T] | None = None) -> Job[T]:
        """Start ``coro`` on the runtime loop; ``caller``: a future of another loop the job settles too."""
        if self._closed or (self._closing and not closing):
            coro.close()
            raise RuntimeClosedError("the letta_nb runtime is closed; call letta_nb.connect() again")
        job: Job[T] = Job(self._box, caller)
        self._box.post(job._start, coro)
        return job

    def _closed_under(self, error: Exception) -> Exception:
        """Work that was in flight when close() began fails as the store shuts (asyncpg's "pool is closing",
        a closed SQLite connection): its caller (e.g. a widget's refresh thread) gets RuntimeClosedError,
        the error it can expect, rather than a driver's."""
        if (self._closing or self._closed) and not isinstance(error, LettaNBError):
            closed = RuntimeClosedError("the letta_nb runtime was closed while this call ran; "
                                        "call letta_nb.connect() again")
            closed.__cause__ = error
            return closed
        return error

    def run_closing(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run the runtime's own close: from now on new work is refused."""
        self._closing = True
        return wait_interruptibly(self.submit(coro, closing=True).result, None)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run on the runtime loop and wait. Ctrl-C cancels the work, waits for its cleanup, re-raises."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("a sync letta_nb call was made from the runtime loop itself; "
                               "use the async API (a-prefixed methods)")
        job = self.submit(coro)
        try:
            return wait_interruptibly(job.result, timeout)
        except KeyboardInterrupt:
            job.cancel_and_wait()  # the step's cancellation path commits what it keeps before we return
            raise
        except Exception as e:
            error = self._closed_under(e)
            if error is e:
                raise
            raise error from e

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await work from any loop (the kernel's, a script's asyncio.run) or from the runtime loop itself."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        assert running is not None  # awaited: some loop runs this
        caller: asyncio.Future[T] = running.create_future()
        job = self.submit(coro, caller=caller)
        try:
            return await caller
        except asyncio.CancelledError:
            job.cancel()
            raise
        except Exception as e:
            error = self._closed_under(e)
            if error is e:
                raise
            raise error from e

    def close_at_exit(self, finalizer: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """If this runtime is still open when the main thread finishes, run ``finalizer()`` on it, then close."""
        self._finalizer = finalizer

    def _close_at_exit(self) -> None:
        try:
            if self._finalizer is not None and not self._closed:
                self.run_closing(self._finalizer())
        except BaseException:  # the process is exiting: say what failed, and still stop the thread
            log.exception("letta_nb: closing the runtime at exit failed")
        finally:
            self.close()

    def close(self, timeout: float = 30) -> None:
        if self._closed:
            return
        self._closed = True
        _open.discard(self)
        gc_policy.runtime_closed()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)


class Job(Generic[T]):
    """A coroutine running on the runtime loop, seen from another thread.

    Unlike the future of ``run_coroutine_threadsafe``, cancelling a Job cancels the task *and* lets the
    caller wait until the task has really finished (its cleanup included): a cancelled
    ``concurrent.futures.Future`` reports done at once, while the step is still saving its partial work.

    Lean on purpose (every sync call and every ``a``-method makes one): the outcome is kept here and the
    finish is one lock, held from creation until the task has finished; a waiter takes it and hands it on.
    No ``concurrent.futures.Future`` (a Condition, its waiter locks, callbacks) and no ``threading.Event``
    per call; an async caller's own future is settled directly (issue 19: a sync call's round trip cost
    ~38 us of which a bare callback round trip is ~17 us).
    """

    def __init__(self, box: Mailbox, caller: asyncio.Future[T] | None = None):
        self._box = box  # the runtime loop's
        self._caller = caller
        self._task: asyncio.Task[None] | None = None
        self._finished_lock = threading.Lock()
        self._finished_lock.acquire()  # released once, when the task has finished
        self._finished = False
        self._cancel_requested = False
        self._outcome: tuple[bool, Any] | None = None  # (True, value) | (False, exception); None: cancelled

    def _start(self, coro: Coroutine[Any, Any, T]) -> None:
        if self._cancel_requested:
            coro.close()
            self._finish(None)
            return
        self._task = self._box.loop.create_task(self._run(coro))

    async def _run(self, coro: Coroutine[Any, Any, T]) -> None:
        """``coro``, its outcome settled as it ends (not from a done callback: that is one more pass of the
        loop, a poll of its selector, before the waiter wakes)."""
        try:
            value = await coro
        except asyncio.CancelledError:
            self._finish(None)
            raise  # the task ends cancelled, as its coroutine did
        except (KeyboardInterrupt, SystemExit) as e:
            self._finish((False, e))
            raise  # asyncio lets these stop the loop, as before
        except BaseException as e:  # noqa: BLE001 - the waiter raises it
            self._finish((False, e))
        else:
            self._finish((True, value))

    def _finish(self, outcome: tuple[bool, Any] | None) -> None:
        if self._finished:  # settled already (cancel() on a closed loop, then a late end): the first stands
            return
        self._outcome, self._finished = outcome, True
        self._finished_lock.release()
        caller = self._caller
        if caller is not None:
            self._caller = None
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits any more
                mailbox(caller.get_loop()).post(_settle_caller, caller, outcome)  # a burst of ends: one wakeup

    def _wait(self, timeout: float | None) -> bool:
        if self._finished:
            return True
        if not self._finished_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._finished_lock.release()  # the next waiter (e.g. cancel_and_wait beside result) goes through too
        return True

    def result(self, timeout: float | None = None) -> T:
        """The coroutine's value, or what it raised; TimeoutError if it has not finished within ``timeout``,
        ``concurrent.futures.CancelledError`` if it was cancelled."""
        if not self._wait(timeout):
            raise TimeoutError
        outcome = self._outcome
        if outcome is None:
            raise concurrent.futures.CancelledError
        ok, value = outcome
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def done(self) -> bool:
        return self._finished

    def cancel(self) -> None:
        """Ask the task to stop (thread-safe); returns at once."""

        def cancel() -> None:
            self._cancel_requested = True
            if self._task is not None:
                self._task.cancel()

        try:
            self._box.post(cancel)  # after the job's start, if that is still in the mailbox
        except RuntimeError:  # loop closed
            if not self._finished:
                self._finish(None)

    def cancel_and_wait(self, timeout: float = 30) -> bool:
        """Cancel and block until the task has finished its cleanup; False on timeout."""
        self.cancel()
        return self._wait(timeout)


def _settle_caller(caller: asyncio.Future[Any], outcome: tuple[bool, Any] | None) -> None:
    """On the caller's loop: its future gets the job's outcome (unless it was cancelled meanwhile)."""
    if caller.done():
        return
    if outcome is None:
        caller.cancel()
    elif outcome[0]:
        caller.set_result(outcome[1])
    else:
        caller.set_exception(outcome[1])
