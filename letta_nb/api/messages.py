"""Messages: send to an agent, stream its turn, read its recall memory.

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, overload

from letta_nb._client_args import (
    agent_ref,
    flag,
    input_text,
    positive_int,
)
from letta_nb._mailbox import mailbox
from letta_nb._twins import async_twin, sync_twin
from letta_nb.api._base import _MAX_ROWS, AgentRef, _page, _Resource
from letta_nb.api.chunks import LettaChunk, LettaChunks
from letta_nb.errors import InvalidArgumentError, TurnCancelledError
from letta_nb.runtime import approvals as _approvals
from letta_nb.runtime.agent_loop import run_turn
from letta_nb.runtime.events import StreamEvent
from letta_nb.runtime.loop_thread import Job, wait_interruptibly
from letta_nb.runtime.services import context as _context
from letta_nb.runtime.services import messages as _messages
from letta_nb.schemas import AgentState, Message, Response

if TYPE_CHECKING:
    pass

__all__ = ['Messages']


class Messages(_Resource):
    """Send messages to an agent and read its recall memory."""

    async def _create(self, agent_id: AgentRef, input: str | None = None, *,
                      messages: list[dict[str, Any]] | None = None, max_steps: int | None = None) -> Response:
        """Send ``input`` (or letta_client-style ``messages=[{"role": "user", "content": ...}, ...]``: several
        user messages are sent as one, in order); returns a Response. ``max_steps`` bounds this turn's steps
        (default: the agent's)."""
        return await self._turn(agent_id, input, messages, max_steps=max_steps)

    async def _list(self, agent_id: AgentRef, *, before: str | None = None, after: str | None = None,
                    limit: int | None = None, order: str | None = None) -> list[Message]:
        """Recall memory, oldest first (the newest ``limit`` when given). letta_client's cursor pagination:
        ``order="desc"`` newest first, ``before``/``after`` a message id (exclusive)."""
        agent = agent_ref(agent_id)
        if limit is not None:
            positive_int(limit, "limit", hi=_MAX_ROWS)
        if before is None and after is None and order is None:  # the common read: the newest ``limit`` only
            return await _messages.recall(self._rt, agent, limit=limit)
        found = await _messages.recall(self._rt, agent)
        return _page(found, before=before, after=after, limit=limit, order=order, what="message of this agent")

    async def _reset(self, agent_id: AgentRef) -> AgentState:
        """Start the conversation afresh: the agent's context window is emptied (its core memory stays). Unlike
        Letta, which deletes the messages, recall memory keeps them (``list`` and ``conversation_search`` find
        them); returns the agent."""
        return await _messages.reset(self._rt, agent_ref(agent_id))

    async def _compact(self, agent_id: AgentRef) -> AgentState:
        """Summarise the conversation now, whatever the window: every message but the last turn leaves the
        context window and a model folds it into the agent's summary (``summarizer_model``, else the agent's
        own; the fixed note if it fails). Recall memory keeps every message; returns the agent, whose
        ``context_summary`` is the new summary."""
        return await _messages.compact(self._rt, agent_ref(agent_id))

    async def _cancel(self, agent_id: AgentRef) -> bool:
        """Cancel the agent's running turn (what it streamed so far is kept). False if none was running.

        A ``create`` waiting for that turn raises :class:`~letta_nb.errors.TurnCancelledError` (its
        ``.response`` is the partial turn); a stream ends with a ``cancelled`` StopEvent."""
        return await _messages.cancel(self._rt, agent_ref(agent_id))

    @overload
    def stream(self, agent_id: AgentRef, input: str | None = None, *,
               messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
               letta_chunks: Literal[False] = False) -> Iterator[StreamEvent]: ...
    @overload
    def stream(self, agent_id: AgentRef, input: str | None = None, *,
               messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
               letta_chunks: Literal[True]) -> Iterator[LettaChunk]: ...
    def stream(self, agent_id: AgentRef, input: str | None = None, *,
               messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
               letta_chunks: bool = False) -> Iterator[StreamEvent] | Iterator[LettaChunk]:
        """Yield events as the turn runs. Closing the iterator early (or Ctrl-C) cancels the turn.
        ``letta_chunks=True``: letta_client's chunks instead (``chunk.content``, ``chunk.tool_call.name``,
        ``chunk.tool_return``, a ``usage_statistics`` chunk last; api/chunks.py)."""
        return self._stream(agent_id, input, messages=messages, max_steps=max_steps, letta_chunks=letta_chunks)

    def _stream(self, agent_id: AgentRef, input: str | None, *, messages: list[dict[str, Any]] | None,
                max_steps: int | None, letta_chunks: bool) -> Iterator[Any]:
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        view = LettaChunks() if flag(letta_chunks, "letta_chunks") else None

        job = self._start_stream(agent_id, input, messages, events.put, done, max_steps)
        try:
            while not _stream_ended(item := wait_interruptibly(lambda t: events.get(timeout=t)), done):
                yield from (item,) if view is None else view(item)
        finally:
            if not job.done():
                job.cancel_and_wait()  # closing the iterator early stops the turn; its partial reply is kept

    @overload
    def astream(self, agent_id: AgentRef, input: str | None = None, *,
                messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
                letta_chunks: Literal[False] = False) -> AsyncIterator[StreamEvent]: ...
    @overload
    def astream(self, agent_id: AgentRef, input: str | None = None, *,
                messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
                letta_chunks: Literal[True]) -> AsyncIterator[LettaChunk]: ...
    def astream(self, agent_id: AgentRef, input: str | None = None, *,
                messages: list[dict[str, Any]] | None = None, max_steps: int | None = None,
                letta_chunks: bool = False) -> AsyncIterator[StreamEvent] | AsyncIterator[LettaChunk]:
        """Yield events as the turn runs. Closing the iterator early (or Ctrl-C) cancels the turn.
        ``letta_chunks=True``: letta_client's chunks instead (``chunk.content``, ``chunk.tool_call.name``,
        ``chunk.tool_return``, a ``usage_statistics`` chunk last; api/chunks.py)."""
        return self._astream(agent_id, input, messages=messages, max_steps=max_steps, letta_chunks=letta_chunks)

    async def _astream(self, agent_id: AgentRef, input: str | None, *, messages: list[dict[str, Any]] | None,
                       max_steps: int | None, letta_chunks: bool) -> AsyncIterator[Any]:
        """Yield events as the turn runs. Closing the iterator early (or Ctrl-C) cancels the turn.
        ``letta_chunks=True``: letta_client's chunks instead (``chunk.content``, ``chunk.tool_call.name``,
        ``chunk.tool_return``, a ``usage_statistics`` chunk last; api/chunks.py)."""
        box = mailbox(asyncio.get_running_loop())  # a burst of events: one wakeup of this loop
        view = LettaChunks() if flag(letta_chunks, "letta_chunks") else None
        events: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def put(item: Any) -> None:
            box.post(events.put_nowait, item)

        job = self._start_stream(agent_id, input, messages, put, done, max_steps)
        try:
            while not _stream_ended(item := await events.get(), done):
                for out in (item,) if view is None else view(item):
                    yield out
        finally:
            if not job.done():
                job.cancel()

    def _start_stream(self, agent: Any, input: Any, messages: Any, put: Callable[[Any], None],
                      done: object, max_steps: int | None = None) -> Job[None]:
        """Run a turn on the runtime loop, putting its events, then an exception if any, then ``done``."""

        async def produce() -> None:
            try:
                await self._turn(agent, input, messages, put, max_steps=max_steps)
            except BaseException as e:
                put(e)
                raise
            finally:
                put(done)

        return self._thread.submit(produce())

    async def _approve(self, agent: AgentRef, tool_call_id: str, approve: bool = True, *,
                       reason: str | None = None) -> Response:
        """Answer a tool call that waits for approval (``Response.pending_approvals``, or the stream's
        ApprovalRequestEvent): approved, it runs once; denied, the model reads ``reason``. The turn then goes
        on; returns its Response. ApprovalError if the call is unknown or already answered."""
        answers = _approvals.answers_from([{"type": "approval", "tool_call_id": tool_call_id, "approve": approve,
                                            "reason": reason}])
        assert answers is not None
        return await _messages.approve(self._rt, agent_ref(agent), answers)

    async def _preview(self, agent_id: AgentRef, input: str | None = None, *,
                       messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The request the model would get if ``input`` were sent now: the OpenAI-compatible body of the turn's
        first step (``messages``, ``tools``, ``tool_choice``, ``model``), built as the turn would build it
        (eviction and tool rules included). Nothing runs and nothing is written."""
        return await _context.preview(self._rt, agent_ref(agent_id), input_text(input, messages))

    async def _turn(self, agent: Any, input: Any, messages: Any, emit: Callable[[Any], None] | None = None, *,
                    max_steps: int | None = None) -> Response:
        answers = _approvals.answers_from(messages)  # letta_client's {"type": "approval", ...} answers a call
        if answers is not None:
            if input is not None:
                raise InvalidArgumentError("pass either input or an approval message in messages, not both")
            return await _messages.approve(self._rt, agent_ref(agent), answers, emit)
        text = input_text(input, messages)
        if max_steps is not None:
            positive_int(max_steps, "max_steps", hi=100)
        # resolved in arrival order (locks.py)
        return await run_turn(self._rt, agent_ref(agent), text, emit, max_steps=max_steps)

    create, acreate = sync_twin(_create), async_twin(_create)
    list, alist = sync_twin(_list), async_twin(_list)
    cancel, acancel = sync_twin(_cancel), async_twin(_cancel)
    reset, areset = sync_twin(_reset), async_twin(_reset)
    compact, acompact = sync_twin(_compact), async_twin(_compact)
    approve, aapprove = sync_twin(_approve), async_twin(_approve)
    preview, apreview = sync_twin(_preview), async_twin(_preview)


def _stream_ended(item: Any, done: object) -> bool:
    """The stream protocol of ``_start_stream``: ``done`` or a cancellation ends it, an error is raised."""
    if item is done or isinstance(item, (asyncio.CancelledError, TurnCancelledError)):
        return True
    if isinstance(item, BaseException):
        raise item
    return False
