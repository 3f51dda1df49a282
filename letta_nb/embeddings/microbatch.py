"""Micro-batching: small ``embed`` calls that arrive together share one model call.

An agent's ``archival_memory_insert``, a loop of ``passages.create`` from several threads, parallel tool
calls, searches of many agents: each embeds one or two texts, and a model call costs far more than a text
in it (the ``local`` model: ~15 ms for one text against ~2 ms a text in a batch of 64 on 2 cores; an
endpoint: a round trip each). :class:`MicroBatcher` wraps an embedder: a small call joins a queue; the
first waits ``window_ms`` (2 ms) for company, then everything queued goes as one ``embed`` call, and calls
arriving while that one runs form the next. Large calls (uploads, ``passages.create`` of a list) already
are batches and go straight through.

Invariants: each caller gets exactly its own rows, in its order (rows are sliced back by position); 0 lost:
if the shared call fails, each request is retried alone, so one caller's failure (a text the endpoint
refuses) is that caller's only; a caller cancelled while waiting leaves the others unaffected. Everything
else (``name``, ``dim``, ``embed_report``, ``stats``, ``on_batch``, ...) is the wrapped embedder's.
State is per event loop (asyncio futures belong to one), so the wrapper may be used from ``asyncio.run``
calls one after another as well as from the runtime's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from letta_nb.embeddings.base import check_texts

__all__ = ["MicroBatcher", "WINDOW_MS", "SMALL_CALL", "MAX_BATCH"]

WINDOW_MS = 2.0  # how long the first small call waits for others to join it
SMALL_CALL = 16  # calls of up to this many texts are micro-batched; larger ones are batches already
MAX_BATCH = 256  # texts per shared call (the wrapped embedder still splits by its own limits)

_OWN = frozenset({"inner", "window_ms", "small_call", "max_batch", "calls", "_queue", "_task", "_loop"})


class MicroBatcher:
    """An embedder whose small concurrent ``embed`` calls share model calls (see the module docstring)."""

    def __init__(self, inner: Any, *, window_ms: float = WINDOW_MS, small_call: int = SMALL_CALL,
                 max_batch: int = MAX_BATCH):
        self.inner = inner
        self.window_ms, self.small_call, self.max_batch = window_ms, small_call, max_batch
        self.calls = 0  # shared calls made (each may carry many requests)
        self._queue: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found on the wrapper
        inner = self.__dict__.get("inner")
        if inner is None:  # half-built (copy, pickle): nothing to delegate to yet
            raise AttributeError(name)
        return getattr(inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:  # e.g. the runtime's ``on_batch`` telemetry hook belongs to the wrapped embedder
            setattr(self.inner, name, value)

    def __repr__(self) -> str:
        return f"MicroBatcher({self.inner!r})"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        if not texts or len(texts) > self.small_call:
            result: np.ndarray = await self.inner.embed(texts)
            return result
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop: whatever the old one queued died with it
            self._loop, self._queue, self._task = loop, [], None
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((list(texts), future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(self.window_ms / 1000)
            while self._queue:
                batch: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_batch):
                    texts, future = self._queue.pop(0)
                    if not future.cancelled():
                        batch.append((texts, future))
                        size += len(texts)
                try:
                    await self._send(batch)
                except asyncio.CancelledError:  # the loop is shutting down: nobody may wait forever
                    for _, future in batch:
                        future.cancel()
                    raise
        except asyncio.CancelledError:
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[list[str], asyncio.Future[np.ndarray]]]) -> None:
        if not batch:
            return
        self.calls += 1
        try:
            rows = await self.inner.embed([t for texts, _ in batch for t in texts])
        except Exception as e:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(e)
                return
            for request in batch:  # one request's bad text must not fail the others: each alone
                await self._send([request])
            return
        start = 0
        for texts, future in batch:
            if not future.done():
                future.set_result(rows[start:start + len(texts)])
            start += len(texts)
