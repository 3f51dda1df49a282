"""The runtime thread: one asyncio loop in a daemon thread that owns every DB, model and tool call.

Why a thread: ipykernel already runs a loop in the main thread, and magics and widget callbacks are
synchronous; running our own loop beside it means a blocking ``client.agents.messages.create`` works in
a cell, in a widget callback and in a plain script alike, and the kernel's loop stays free to deliver
widget messages while a step runs.

Sync callers use :meth:`RuntimeThread.run`: Ctrl-C (KeyboardInterrupt, a kernel interrupt) cancels the
coroutine on the runtime loop, waits for its cleanup (which commits what should be kept) and re-raises.
Async callers on another loop ``await`` :meth:`RuntimeThread.run_async`; cancelling them cancels the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from letta_nb.errors import RuntimeClosedError

__all__ = ["RuntimeThread"]

T = TypeVar("T")


class RuntimeThread:
    def __init__(self, name: str = "letta_nb-runtime"):
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closed = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

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

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeClosedError("the letta_nb runtime is closed; call letta_nb.connect() again")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run on the runtime loop and wait. Ctrl-C cancels the work cleanly, then re-raises."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("a sync letta_nb call was made from the runtime loop itself; use the async API (a-prefixed methods)")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except KeyboardInterrupt:
            future.cancel()
            try:  # let the step's cancellation path commit what it keeps before we return control
                future.result(timeout=30)
            except BaseException:
                pass
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await work from any loop (the kernel's, a script's asyncio.run) or from the runtime loop itself."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        future = self.submit(coro)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def close(self, timeout: float = 30) -> None:
        if self._closed:
            return
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
