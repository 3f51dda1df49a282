"""Human approval of tool calls: which calls wait for a person, how a waiting call is kept, how an answer
resumes the turn.

A call waits when its tool asks for it: a ``requires_approval`` tool rule names it, it was registered with
``requires_approval=True`` (``%letta tool add f --approve``; imported custom tools are stored so), or it is a
tool that runs code in the notebook (:data:`CODE_TOOLS`). The step that made such a call is committed as
usual, with the assistant message (its status :data:`ASKED`) and the results of the step's other calls, but
with no tool message for a waiting call; the turn ends with stop reason ``requires_approval`` and one
:class:`~letta_nb.runtime.events.ApprovalRequestEvent` per waiting call.

Invariants:
- **The store is the record.** A call waits exactly when the agent's last assistant message has status
  :data:`ASKED` and no tool message answers that call. No table, no in-memory flag: a kernel restarted (or
  killed) while a call waits finds it waiting, and another process sees the same.
- **Answered once.** An answer is a turn (the agent's lock and lease, runtime/agent_loop.py): its first step
  runs the approved calls (or writes the denial the model reads) and commits their tool messages, fenced as
  every step; a second answer to the same call then finds it answered and is refused
  (:class:`~letta_nb.errors.ApprovalError`). The tool message of an approved call lands in this later step,
  not in the step of its call (the only place recall memory has a call and its result in two steps).
- **Nothing else first.** While a call waits, a new user message is refused with
  :class:`~letta_nb.errors.PendingApprovalError`, as Letta does: the model would otherwise see a call with no
  result (which OpenAI-compatible APIs reject) and the user would not know the call never ran.
- **Rules hold on every path.** An approved call is checked against the tool rules again before it runs
  (Letta 0.16.8 skips that); a call the rules now forbid becomes the rule's error, as in any step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from letta_nb._text import clean_text
from letta_nb.errors import ApprovalError, InvalidArgumentError, PendingApprovalError
from letta_nb.llm.base import ToolCall, Usage
from letta_nb.runtime import rule_solver
from letta_nb.runtime.base_tools import TERMINAL_TOOLS, ToolContext
from letta_nb.runtime.events import ApprovalRequestEvent, StepEvent, ToolReturnEvent
from letta_nb.runtime.memory import WorkingMemory
from letta_nb.runtime.tool_schema import ToolSpec
from letta_nb.schemas import Message, StepStats
from letta_nb.store.ids import new_id

if TYPE_CHECKING:
    from letta_nb.runtime.agent_loop import _Turn

__all__ = ["ASKED", "CODE_TOOLS", "STOP", "Answer", "answers_from", "check_answers", "denial", "needs_approval",
           "pending", "refuse_while_waiting", "request_events", "resume", "waiting"]

#: Stop reason of a turn that waits (Letta's).
STOP = "requires_approval"
#: Status of an assistant message whose calls (some of them) waited for approval.
ASKED = "approval"
#: Tools that run code in the notebook's kernel (issue 15's kernel tools): they always ask first.
CODE_TOOLS = frozenset({"run_python"})


@dataclass(frozen=True)
class Answer:
    """A person's answer to one waiting call."""

    tool_call_id: str
    approve: bool
    reason: str | None = None


def needs_approval(rules: Iterable[Mapping[str, Any]], spec: ToolSpec | None, name: str) -> bool:
    """Whether a call of tool ``name`` (``spec``: the agent's tool of that name, None if it has none) waits."""
    if rule_solver.needs_approval(rules, name):
        return True
    return spec is not None and (spec.requires_approval or spec.name in CODE_TOOLS)


def waiting(calls: Sequence[ToolCall], tools: Mapping[str, ToolSpec], rules: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ids of ``calls`` that wait for approval."""
    rules = list(rules)
    return {c.id for c in calls if needs_approval(rules, tools.get(c.name), c.name)}


def pending(messages: Sequence[Message]) -> list[ToolCall]:
    """The calls waiting for approval: those of the last assistant message, when it asked, with no answer."""
    answered: set[str] = set()
    for m in reversed(messages):
        if m.role == "tool" and m.tool_call_id:
            answered.add(m.tool_call_id)
        elif m.role == "assistant":
            if m.status != ASKED:
                return []
            return [c for c in m.tool_calls if c.id not in answered]
        elif m.role == "user":
            return []
    return []


def request_events(calls: Iterable[ToolCall]) -> list[ApprovalRequestEvent]:
    return [ApprovalRequestEvent(c.id, c.name, c.arguments) for c in calls]


def denial(reason: str | None) -> str:
    """What the model reads for a denied call (Letta's wording)."""
    text = f"Error: request to call tool denied. User reason: {reason}" if reason else \
        "Error: request to call tool denied."
    return clean_text(text)


# ---- checking what a caller sends ------------------------------------------------------------------------
def refuse_while_waiting(agent_name: str, messages: Sequence[Message]) -> None:
    """A new user message while a call waits: PendingApprovalError (see the module docstring)."""
    calls = pending(messages)
    if calls:
        raise PendingApprovalError(agent_name, calls)


def check_answers(agent_name: str, messages: Sequence[Message], answers: Sequence[Answer]) -> list[ToolCall]:
    """The waiting calls, after checking every answer names one of them, once; ApprovalError otherwise."""
    calls = pending(messages)
    ids = {c.id for c in calls}
    seen: set[str] = set()
    for a in answers:
        if a.tool_call_id in seen:
            raise ApprovalError(f"tool call {a.tool_call_id!r} is answered twice in one request; answer each "
                                "waiting call once.")
        seen.add(a.tool_call_id)
        if a.tool_call_id in ids:
            continue
        answered = any(m.role == "tool" and m.tool_call_id == a.tool_call_id for m in messages)
        what = "was already answered" if answered else "is not a call of this agent that waits for approval"
        waits = (f"waiting: {', '.join(f'{c.name} ({c.id})' for c in calls)}" if calls
                 else "no call of this agent waits for approval")
        raise ApprovalError(f"tool call {a.tool_call_id!r} of agent {agent_name!r} {what}; {waits}.")
    return calls


def answers_from(messages: Any) -> list[Answer] | None:
    """letta_client's approval message form, as answers; None when ``messages`` holds no approval message.

    Accepted: ``{"type": "approval", "approve": bool, "tool_call_id"|"approval_request_id": str, "reason": str}``
    and ``{"type": "approval", "approvals": [{"type": "approval", "tool_call_id": ..., "approve": ...,
    "reason": ...}]}`` (dicts or letta_client's models). An ``approval_request_id`` is the id of the assistant
    message that asked; it stands for its one waiting call (see :func:`resolve_request_ids`)."""
    if messages is None or not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return None  # None first: every plain send passes here, and an ABC check costs ~1 us
    items = [_as_dict(m) for m in messages]
    if not any(_kind(i) == "approval" for i in items):
        return None
    if len(items) != 1:
        raise InvalidArgumentError("messages must hold one approval message alone (not mixed with user "
                                   "messages): [{'type': 'approval', 'tool_call_id': ..., 'approve': True}]")
    item = items[0]
    if item.get("approvals"):
        return [_answer(_as_dict(a), f"messages[0]['approvals'][{i}]") for i, a in enumerate(item["approvals"])]
    return [_answer(item, "messages[0]")]


def _as_dict(item: Any) -> dict[str, Any]:
    if hasattr(item, "model_dump"):
        item = item.model_dump(exclude_none=True)
    return dict(item) if isinstance(item, Mapping) else {}


def _kind(item: Mapping[str, Any]) -> Any:
    kind = item.get("type")
    return getattr(kind, "value", kind)


def _answer(item: Mapping[str, Any], where: str) -> Answer:
    call_id = item.get("tool_call_id") or item.get("approval_request_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidArgumentError(f"{where} needs 'tool_call_id' (the waiting call's id, from the "
                                   "ApprovalRequestEvent or Response.pending_approvals)")
    approve = item.get("approve")
    if not isinstance(approve, bool):
        raise InvalidArgumentError(f"{where}['approve'] must be True or False, got {approve!r}")
    reason = item.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidArgumentError(f"{where}['reason'] must be a string or None, got {type(reason).__name__}")
    return Answer(call_id, approve, reason)


def resolve_request_ids(messages: Sequence[Message], answers: Sequence[Answer]) -> list[Answer]:
    """Answers naming the asking message's id (Letta's ``approval_request_id``) name its one waiting call."""
    calls = pending(messages)
    asked = next((m for m in reversed(messages) if m.role == "assistant"), None)
    out = []
    for a in answers:
        if asked is not None and a.tool_call_id == asked.id and calls:
            if len(calls) > 1:
                raise ApprovalError(f"message {asked.id!r} asked about {len(calls)} calls; answer each by its "
                                    f"tool_call_id: {', '.join(c.id for c in calls)}")
            a = Answer(calls[0].id, a.approve, a.reason)
        out.append(a)
    return out


# ---- the answering step ----------------------------------------------------------------------------------
async def resume(turn: _Turn, answers: Sequence[Answer]) -> str | None:
    """The first step of an answering turn: run the approved calls, deny the others, commit their tool
    messages. Returns the turn's stop reason if it ends here (calls still wait; a reply was sent), else None
    (the model is called next, as after any step with tool calls)."""
    rt, session = turn.rt, turn.session
    t0 = time.perf_counter()
    turn.step_id, turn.output = new_id("step"), None
    calls = pending(session.messages)  # the answers were checked against them under this turn's lock
    by_id = {a.tool_call_id: a for a in answers}
    refused = _against_rules(turn, [c for c in calls if c.id in by_id and by_id[c.id].approve])
    approved = [c for c in calls if c.id in by_id and by_id[c.id].approve and c.id not in refused]
    memory = WorkingMemory(turn.agent.blocks)
    ctx = ToolContext(agent=turn.agent, memory=memory, store=rt.store, archival=rt.archival)
    results = {r.call_id: r for r in await rt.executor.execute(approved, session.tools, {"agent_state": ctx})}
    tools_ms = (time.perf_counter() - t0) * 1000
    messages: list[Message] = []
    for call in calls:
        if call.id not in by_id:
            continue
        r = results.get(call.id)
        if r is not None:
            msg = turn.new_message(role="tool", content=r.content, tool_call_id=call.id, name=call.name,
                                   status=r.status)
        elif call.id in refused:  # approved, but the rules (as they are now) forbid it: never run
            msg = turn.new_message(role="tool", content=refused[call.id], tool_call_id=call.id, name=call.name,
                                   status="error")
        else:
            msg = turn.new_message(role="tool", content=denial(by_id[call.id].reason), tool_call_id=call.id,
                                   name=call.name, status="error")
        messages.append(msg)
        if turn.streaming and (call.name not in TERMINAL_TOOLS or msg.status != "success"):
            turn.emit(ToolReturnEvent(call.id, call.name, msg.status or "", msg.content or "",
                                      r.duration_ms if r is not None else 0.0))
    still = [c for c in calls if c.id not in by_id]
    replied = any(r.name in TERMINAL_TOOLS and r.status == "success" for r in results.values())
    stop = STOP if still else ("end_turn" if replied else None)
    total_ms = (time.perf_counter() - t0) * 1000
    step = turn.step_record(0, len(messages), 0.0, tools_ms, total_ms, Usage(), stop)
    db_ms = await turn.commit(messages, step, memory, ctx.pending_passages, None)  # refused: StaleCommitError
    stats = StepStats(turn.step_id, 0, 0.0, tools_ms, db_ms or 0.0, (time.perf_counter() - t0) * 1000, 0, 0, stop,
                      tuple(c.name for c in approved))
    turn.steps.append(stats)
    rt.record_step(turn.agent, stats)
    if turn.streaming:
        turn.emit(StepEvent(stats))
        if still:
            for event in request_events(still):
                turn.emit(event)
    return stop


def _against_rules(turn: _Turn, calls: Sequence[ToolCall]) -> dict[str, str]:
    """Approved calls the agent's tool rules, as they are now, forbid: call id -> the rule's tool error.
    Checked in call order, each as if the approved calls before it had run."""
    state = rule_solver.RuleState.of_turn(turn.agent.tool_rules, turn.session.tools, turn.session.messages)
    refused: dict[str, str] = {}
    for call in calls:
        if state is None:
            break
        why = rule_solver.check_call(state, call.name)
        if why is not None:
            refused[call.id] = why
        else:
            state = state.after([(call.name, True, "")])
    return refused
