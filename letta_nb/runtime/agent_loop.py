"""The agent loop: one user message in, steps until the agent replies (or a bound is hit).

Invariants:
- A turn holds its agent's lock from start to end, so turns of one agent run one at a time in the
  order they arrived, whoever sent them (widget, magic, threads, tasks) and however they named the agent
  (the name is resolved inside the lock's FIFO admission, see locks.py).
- A tool cannot start a turn of the agent whose turn runs it (it would wait for itself): it gets
  ``ReentrantTurnError`` at once, as its own error result.
- A step is one model call plus its tool calls. Its messages (the user message on the first step), its
  memory edits, its archival inserts and its metrics row are committed in one transaction; only then
  does the in-memory session move forward. If the commit fails, the cached session is dropped and
  reloaded from the store on the next turn.
- A turn is stored whole, or the caller gets an exception and nothing of it is stored. Every step commit
  is fenced by the turn's lease (runtime/leases.py). If one is refused (the lease was lost: this process
  was paused past it and another process took the agent), nothing of that step was written; the turn
  takes the lease again as an ordinary waiter, reloads the agent (stale by definition: the other process
  wrote to it) and re-runs the refused step against it (model call and tools again), then goes on. Its
  steps stay in order and ``seq`` stays contiguous; another process's turn may sit between two of its
  steps. After :data:`MAX_RECOVERIES` such re-runs the turn ends in ``StaleCommitError``: the steps it
  committed before the last refusal stay (whole, the user message with the first), nothing of the refused
  step does; refused at its first step, nothing of the turn is stored.
- Cancellation (Ctrl-C, Stop, ``messages.cancel``) commits what is worth keeping: the user message and
  any text the model had streamed, as a plain assistant message, in a step with stop reason
  ``cancelled``. Half-executed tool calls and their memory edits are dropped, never half-written.
  A turn stopped by ``messages.cancel`` (and by nothing else) ends in ``TurnCancelledError`` carrying
  the partial Response, not in a CancelledError its caller never asked for.
- Tool problems (unknown tool, bad JSON, a raise, a timeout) are tool results the model reads. So is a call
  that breaks the agent's tool rules: it never runs (runtime/rule_solver.py also decides which tools a step
  offers, which call is forced, and whether a step ends the turn).
- A call of a tool that asks for approval is not run: its step is committed without its result and the
  turn stops with ``requires_approval``; an answer is a turn of its own whose first step runs (or denies)
  it (runtime/approvals.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from letta_nb.errors import (
    InvalidArgumentError,
    ReentrantTurnError,
    StaleCommitError,
    StoreError,
    TurnCancelledError,
)
from letta_nb.llm.base import Completion, Usage
from letta_nb.llm.tokens import Prompt, message_tokens
from letta_nb.runtime import approvals, compaction
from letta_nb.runtime.base_tools import TERMINAL_TOOLS, ToolContext
from letta_nb.runtime.events import (
    StepEvent,
    StopEvent,
    StreamEvent,
    ToolCallEvent,
    ToolReturnEvent,
)
from letta_nb.runtime.executor import ToolResult
from letta_nb.runtime.leases import Lease
from letta_nb.runtime.locks import TURN_TASK
from letta_nb.runtime.memory import WorkingMemory
from letta_nb.runtime.replies import StepOutput, content_is_reply
from letta_nb.runtime.rule_solver import RuleState, offered
from letta_nb.runtime.runtime import current_agent
from letta_nb.runtime.session import EVICT_TO, AgentSession, Eviction
from letta_nb.runtime.uncancellable import Uncancellable
from letta_nb.schemas import Message, Response, StepStats
from letta_nb.store.backend import StepWrite
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.records import PassageRecord, StepRecord

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["MAX_RECOVERIES", "run_turn"]

#: Refused step commits a turn recovers from (re-taking the lease, re-running the step) before it gives up.
MAX_RECOVERIES = 3

Emit = Callable[[StreamEvent], None]


class _Restart(Exception):  # noqa: N818 - a signal inside this module, not an error anyone sees
    """The read of the kept lease a turn started on (runtime/leases.py ``acquire(speculate=True)``) found the
    lease lost or awaited, or the agent changed. Raised before the turn stored, showed or ran anything (the
    model's first event, a tool, an answer wait for it): run_turn starts the turn again on a fresh state."""


def _noop(_: StreamEvent) -> None:
    pass


class _Turn:
    """State of one turn; a class so the cancellation path can see how far the turn got."""

    def __init__(self, rt: Runtime, session: AgentSession, text: str, emit: Emit, lease: Lease,
                 answers: list[approvals.Answer] | None = None):
        self.rt, self.session, self.emit, self.lease = rt, session, emit, lease
        self.lease_lost = False
        self.recoveries = 0  # refused commits this turn recovered from (see recover)
        self.max_steps: int | None = None  # None: the agent's max_steps
        self.agent = session.agent
        self.run_id = new_id("run")
        self.seq = self.agent.last_seq
        self.pending: list[Message] = []  # messages of the current step, not yet committed
        self.out: list[Message] = []  # committed messages of this turn
        self.steps: list[StepStats] = []
        self.usage = Usage()
        # Events are built only when someone watches the stream (a hundred busy agents feel every
        # allocation: the garbage collector's passes grow with them). The step's model output (the reply
        # so far, kept if a cancel comes) is routed by runtime/replies.py.
        self.output: StepOutput | None = None
        self.streaming = emit is not _noop
        self.user_text = text
        self.answers = answers  # a turn that answers calls waiting for approval (no user message)
        self.step_id = ""

    def new_message(self, **fields: Any) -> Message:
        self.seq += 1
        return Message(id=new_id("message"), agent_id=self.agent.id, seq=self.seq, created_at=utcnow(),
                       step_id=self.step_id, **fields)

    async def confirm(self) -> None:
        """Settle the read of the kept lease this turn started on, if one is in flight (runtime/leases.py
        ``confirm``): _Restart if the lease was given up or the agent is not the state the turn started from
        (another process wrote it, or registered tools). Called before anything of the turn is shown or done."""
        if self.lease.check is None:
            return
        if not await self.rt.leases.confirm(self.lease, self.agent.name):
            raise _Restart
        lease = self.lease
        if not self.rt.session_is_current(self.session, (lease.last_seq, lease.version, lease.tools_version)):
            raise _Restart

    async def commit(self, messages: list[Message], step: StepRecord, memory: WorkingMemory | None,
                     passages: list[PassageRecord], eviction: Eviction | None, *,
                     recover: bool = False) -> float | None:
        """Commit a step, fenced by the turn's lease and the ``last_seq`` it builds on, renewing the lease
        (runtime/leases.py). Refused (the lease was lost): with ``recover``, the turn holds the lease again
        and a reloaded session, and None says "run the step again"; else StaleCommitError."""
        values: dict[str, str] = {}
        bases: dict[str, str] = {}
        if memory is not None and memory.changed:  # most steps edit no block
            values = {label: memory.get(label).value for label in memory.changed}
            bases = {label: self.agent.block(label).value for label in memory.changed}
        write = StepWrite(
            agent_id=self.agent.id,
            messages=messages,
            block_values=values,
            block_bases=bases,
            passages=passages,
            step=step,
            last_seq=self.seq,
            context_start_seq=None if eviction is None else eviction.start_seq,
            context_summary=None if eviction is None else eviction.summary,
            fence=(self.lease.token, self.agent.last_seq),
            lease_until=self.rt.leases.until(self.lease),
        )
        fut = self.rt.store.submit_step(write)
        cancelled = False
        try:
            try:
                db_ms = await Uncancellable(fut)  # a stop waits for the commit (runtime/uncancellable.py)
            except asyncio.CancelledError:
                cancelled = True  # the write landed (or was refused): stay in step with it
                db_ms = await fut
        except StaleCommitError:
            self.rt.invalidate_agent(self.agent.id)
            self.lease_lost = True
            self.rt.leases.refused(self.lease)  # not ours any more: nothing to renew or give up
            if cancelled:  # stopped meanwhile: nothing of this step is stored, and nothing more will be
                raise asyncio.CancelledError from None
            if not recover or self.recoveries >= MAX_RECOVERIES:
                raise StaleCommitError(self.agent.name) from None
            await self.recover()
            return None
        except Exception as e:
            self.rt.invalidate_agent(self.agent.id)
            raise StoreError(f"committing a step of agent {self.agent.name!r} failed: {e}") from e
        self.rt.leases.renewed(self.lease, self.seq)
        self.session.append(messages)
        if memory is not None and memory.changed:
            self.agent.blocks = memory.blocks
        self.out.extend(messages)
        self.output = None  # committed: nothing of this step is left to save if cancelled now
        if cancelled:
            raise asyncio.CancelledError
        return db_ms

    async def recover(self) -> None:
        """After a refused commit: take the agent's lease again (queued in arrival order behind other
        processes, AgentBusyError after ``lease_timeout``), reload the agent and start the step afresh."""
        self.recoveries += 1
        started = time.monotonic()
        lease = await self.rt.leases.acquire(self.agent.id, self.agent.name)
        self.lease, self.lease_lost = lease, False
        self.rt.leases.recovered(lease, (time.monotonic() - started) * 1000)
        self.session = await self.rt.session(lease.agent_id, (lease.last_seq, lease.version, lease.tools_version))
        self.agent = self.session.agent
        self.seq, self.pending, self.output = self.agent.last_seq, [], None

    def step_record(self, index: int, n: int, llm_ms: float, tools_ms: float, total_ms: float, usage: Usage,
                    stop: str | None) -> StepRecord:
        return StepRecord(
            id=self.step_id, agent_id=self.agent.id, run_id=self.run_id, step_index=index, model=self.agent.model,
            n_messages=n, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            llm_ms=llm_ms, tools_ms=tools_ms, total_ms=total_ms, stop_reason=stop, created_at=utcnow(),
        )

    async def run(self) -> Response:
        rt = self.rt
        if self.answers is not None:
            await self.confirm()  # its first step runs tools before any model call
        ended = await approvals.resume(self, self.answers) if self.answers is not None else None
        index = 0 if self.answers is None else 1
        while ended is None and index < (self.max_steps or self.agent.max_steps):
            session = self.session  # a new one after a refused commit (see recover)
            t0 = time.perf_counter()
            self.step_id = new_id("step")
            self.output = None
            if index == 0:
                self.pending = [self.new_message(role="user", content=self.user_text)]
            # a model summarises what leaves the window before the request that needs the room (compaction.py)
            eviction = await compaction.make_room(rt, session, self.pending)
            memory = WorkingMemory(self.agent.blocks)

            rules = RuleState.of_turn(self.agent.tool_rules, session.tools, session.messages, self.pending)
            completion = await self._call_model(session.prompt(self.pending), rules)
            llm_ms = (time.perf_counter() - t0) * 1000 - (eviction.wait_ms if eviction else 0.0)
            self.usage += completion.usage
            assistant = self.new_message(role="assistant", content=completion.content,
                                         tool_calls=completion.tool_calls)
            self.pending.append(assistant)
            if self.streaming:
                for call in completion.tool_calls:
                    if call.name not in TERMINAL_TOOLS:
                        self.emit(ToolCallEvent(call.id, call.name, call.arguments, call.recovered))
            refused = rules.screen_calls(completion.tool_calls) if rules is not None else {}
            calls = [c for c in completion.tool_calls if c.id not in refused] if refused else completion.tool_calls
            asked = approvals.waiting(calls, session.tools, self.agent.tool_rules)
            if asked:  # those calls wait for a person: the step is kept without their results
                self.pending[-1] = assistant = dataclasses.replace(assistant, status=approvals.ASKED)

            t_tools = time.perf_counter()
            ctx = ToolContext(agent=self.agent, memory=memory, store=rt.store, archival=rt.archival)
            results = await rt.executor.execute([c for c in calls if c.id not in asked] if asked else calls,
                                                session.tools, {"agent_state": ctx})
            if refused:  # calls breaking a tool rule never ran: the model reads why (runtime/rule_solver.py)
                ran = {r.call_id: r for r in results}
                results = [ran.get(c.id) or ToolResult(c.id, c.name, "error", refused[c.id], None, 0.0, time.time(),
                                                       "ToolRuleError")
                           for c in completion.tool_calls if c.id in ran or c.id in refused]
            tools_ms = (time.perf_counter() - t_tools) * 1000
            for r in results:
                self.pending.append(self.new_message(role="tool", content=r.content, tool_call_id=r.call_id,
                                                     name=r.name, status=r.status))
                if self.streaming and (r.name not in TERMINAL_TOOLS or r.status != "success"):
                    self.emit(ToolReturnEvent(r.call_id, r.name, r.status, r.content, r.duration_ms))
            replied = any(r.name in TERMINAL_TOOLS and r.status == "success" for r in results)
            finished = replied or not completion.tool_calls or bool(asked)
            if rules is not None and not asked:  # exit_loop, continue_loop, required_before_exit
                rules = rules.after((r.name, r.status == "success", r.content) for r in results)
                finished = rules.turn_ends([(r.name, r.status == "success") for r in results], finished)
                if not finished and not completion.tool_calls:  # text only, required tools still to run
                    self.pending.append(self.new_message(role="user", content=rules.reminder()))
            stop = approvals.STOP if asked else ("end_turn" if finished else None)
            total_ms = (time.perf_counter() - t0) * 1000
            messages, self.pending = self.pending, []
            step = self.step_record(index, len(messages), llm_ms, tools_ms, total_ms, completion.usage, stop)
            db_ms = await self.commit(messages, step, memory, ctx.pending_passages, eviction, recover=True)
            if db_ms is None:  # refused, and the lease is ours again: the step runs again on the fresh state
                continue
            stats = StepStats(self.step_id, index, llm_ms, tools_ms, db_ms, (time.perf_counter() - t0) * 1000,
                              completion.usage.prompt_tokens, completion.usage.completion_tokens, stop,
                              tuple(r.name for r in results), **compaction.stats_fields(eviction))
            self.steps.append(stats)
            rt.record_step(self.agent, stats, completion.ttft_ms)
            if self.streaming:
                self.emit(StepEvent(stats))
                for event in approvals.request_events(c for c in completion.tool_calls if c.id in asked):
                    self.emit(event)
            index += 1
            if finished:
                ended = stop
                break
        stop_reason = ended or "max_steps"
        if self.streaming:
            self.emit(StopEvent(stop_reason, self.usage))
        waiting = approvals.pending(self.session.messages) if stop_reason == approvals.STOP else []
        return Response(self.out, self.usage, self.steps, stop_reason, self.run_id, pending_approvals=waiting)

    async def _call_model(self, prompt: list[dict[str, Any]], rules: RuleState | None = None) -> Completion:
        """The model's answer for this step: reply, reasoning and tool calls as runtime/replies.py routes
        them (a call written as JSON text comes back as a recovered tool call). With tool rules, only the
        tools they allow now are offered, and a call is forced where they demand one."""
        tools = self.session.tools
        if isinstance(prompt, Prompt):  # unwatched, the offline model sends the Completion alone (llm/tokens.py)
            prompt.watched = self.streaming
        output = self.output = StepOutput(self.emit if self.streaming else None, offered=tools,
                                          content_reply=content_is_reply(self.agent.agent_type, tools))
        schemas, tool_choice = offered(self.session.tool_schemas, rules)
        choice = {"tool_choice": tool_choice} if tool_choice is not None else {}
        completion: Completion | None = None
        stream = self.session.llm.stream(prompt, schemas, **choice)
        async for event in stream:
            if self.lease.check is not None:  # the model's answer waits for the lease's read, not its question
                try:
                    await self.confirm()
                except BaseException:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()  # its request ends now, not when the generator is collected
                    raise
            if isinstance(event, Completion):
                completion = event
            else:
                output.feed(event)
        if completion is None:
            raise RuntimeError(f"model {self.session.llm.name!r} ended its stream without a completion")
        return output.finish(completion)

    async def save_interrupted(self, reason: str) -> None:
        """Commit the user message and any streamed reply text of an interrupted step."""
        keep = [m for m in self.pending if m.role == "user"]
        partial = self.output.partial_reply() if self.output is not None else ""
        if partial:
            keep.append(self.new_message(role="assistant", content=partial, status=reason))
        if not keep:
            return
        base = self.agent.last_seq + 1  # the last committed seq: close any gap left by dropped messages
        keep = [_reseq(m, base + i) for i, m in enumerate(keep)]
        self.seq = keep[-1].seq
        self.pending = []
        step = self.step_record(len(self.steps), len(keep), 0.0, 0.0, 0.0, Usage(), reason)
        await self.commit(keep, step, None, [], None)  # refused: StaleCommitError (nothing to re-run)


def _reseq(m: Message, seq: int) -> Message:
    return m if m.seq == seq else dataclasses.replace(m, seq=seq)


async def run_turn(rt: Runtime, agent: Any, text: str, emit: Emit | None = None, *,
                   answers: list[approvals.Answer] | None = None, max_steps: int | None = None) -> Response:
    """Run one turn of ``agent`` (an id, a name or an AgentState); its place in the agent's queue is taken
    when this is called, before anything awaits. With ``answers`` (and no ``text``), the turn answers the
    agent's calls that wait for approval and goes on from there (runtime/approvals.py)."""
    if answers is None and (not isinstance(text, str) or not text.strip()):
        raise InvalidArgumentError(f"input must be a non-empty string, got {text!r}")
    caller = current_agent.get(None)  # set when a tool of a running turn is the one sending

    async def resolve(ref: Any) -> str:
        agent_id = await rt.resolve_agent(ref)
        if agent_id == caller and agent_id in rt.running:
            raise ReentrantTurnError((await rt.session(agent_id)).agent.name)
        return agent_id

    async with rt.locks.hold(agent, resolve) as agent_id:
        name = agent if isinstance(agent, str) else None
        lease = await rt.leases.acquire(agent_id, name, speculate=True)
        try:
            try:
                return await _leased_turn(rt, agent_id, text, emit, lease, answers, max_steps)
            except _Restart:  # nothing of it was stored or shown; once: this lease is read, or granted afresh
                rt.leases.restarted(agent_id, lease.token)
                lease = rt.leases.held.get(agent_id) or await rt.leases.acquire(agent_id, name)
                return await _leased_turn(rt, agent_id, text, emit, lease, answers, max_steps)
        finally:
            # kept a moment for the agent's next turn, then given up; the turn may hold a newer lease than
            # the one it started with (it recovered from a refused commit): we hold the lock, so it is ours
            rt.leases.done(rt.leases.held.get(agent_id, lease))


async def _leased_turn(rt: Runtime, agent_id: str, text: str, emit: Emit | None, lease: Lease,
                       answers: list[approvals.Answer] | None = None, max_steps: int | None = None) -> Response:
    """The turn, holding the agent's lock and lease: the session checked against the grant's state first."""
    session = await rt.session(agent_id, (lease.last_seq, lease.version, lease.tools_version))
    turn = _Turn(rt, session, text, emit or _noop, lease, answers)
    try:
        answers = _check_input(session, text, answers)
    except Exception:  # judged on the state the turn started from: settle the lease's read before saying so
        await turn.confirm()
        raise
    turn.answers = answers
    turn.max_steps = max_steps  # this turn's limit (letta_client's messages.create(max_steps=)), else the agent's
    task = asyncio.current_task()
    assert task is not None  # a turn is a coroutine the runtime's loop runs as a task
    # Seen by this turn's tools and what they submit (reset below: a turn may run inline in a tool's task).
    tokens = current_agent.set(agent_id), TURN_TASK.set(task)
    rt.running[agent_id] = task
    try:
        return await turn.run()
    except _Restart:
        raise
    except asyncio.CancelledError:
        await asyncio.shield(_save(turn, "cancelled"))
        turn.emit(StopEvent("cancelled", turn.usage))
        if task is not None and rt.stop_requested(agent_id, task) and _uncancel(task) == 0:
            # Only messages.cancel() stopped it: its caller gets a documented error, not a bare
            # CancelledError. Any other cancellation (Ctrl-C, a timeout, close) still propagates.
            partial = Response(turn.out, turn.usage, turn.steps, "cancelled", turn.run_id)
            raise TurnCancelledError(turn.agent.name, partial) from None
        raise
    except BaseException:
        await asyncio.shield(_save(turn, "error"))
        raise
    finally:
        current_agent.reset(tokens[0])
        TURN_TASK.reset(tokens[1])
        if rt.running.get(agent_id) is task:
            del rt.running[agent_id]
            rt.stop_requested(agent_id, task, clear=True)


def _check_input(session: AgentSession, text: str, answers: list[approvals.Answer] | None) \
        -> list[approvals.Answer] | None:
    """The turn's input checked against the agent's state (under the lock: a call is answered once); the
    answers with their request ids resolved."""
    if answers is not None:
        answers = approvals.resolve_request_ids(session.messages, answers)
        approvals.check_answers(session.agent.name, session.messages, answers)
    else:
        approvals.refuse_while_waiting(session.agent.name, session.messages)
    size = message_tokens({"role": "user", "content": text})
    if answers is None and size > EVICT_TO * session.budget:
        raise InvalidArgumentError(
            f"input is about {size} tokens, more than half of the context window of model "
            f"{session.llm.name!r} ({session.budget} tokens). Split it, or upload it to archival memory with "
            "client.agents.passages.create(...) and ask about it."
        )
    return answers


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw one cancellation request; the number left (3.10 has no count: taken as none left)."""
    uncancel = getattr(task, "uncancel", None)
    return uncancel() if uncancel is not None else 0


async def _save(turn: _Turn, reason: str) -> None:
    if turn.lease_lost:  # a refused commit: the agent is another process's now, nothing more is ours to write
        return
    try:
        await turn.save_interrupted(reason)
    except Exception:
        turn.rt.invalidate_agent(turn.agent.id)
