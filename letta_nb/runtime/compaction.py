"""Compaction: a model folds the messages leaving an agent's context window into its running summary.

Letta's sliding window, done so a failing summariser never costs a turn. When a step's prompt would pass
``EVICT_AT`` of the window, the oldest turns leave it (runtime/session.py picks the cut at a user-message
boundary, leaving room for a summary of :func:`summary_budget` tokens) and the summariser model gets the
previous summary plus the evicted messages and writes the new one, under a word budget (Letta's prompt
shape: previous summary + evicted messages -> new summary). The model is ``summarizer_model`` (a cheaper one)
or the agent's own.

Invariants:
- The step never sends an over-window request: the summary is written *before* the request that needs the
  room, and a summary request is itself kept under ``REQUEST_SHARE`` of the summariser's window (evicted
  messages that do not fit are folded in several passes, oldest first).
- On an error or after ``summarizer_timeout_s`` the fixed note of runtime/session.py stands in, and the
  reason is recorded (``Eviction.fallback``, then the step's ``StepStats.summary_fallback`` and
  ``probes.steps()``). Only a cancelled turn stops a summary early, and then nothing is applied.
- Nothing here writes: the cut and the summary are committed with the step that made them (agent_loop.py),
  or by :func:`compact` under the agent's lease.
- ``messages.preview`` summarises ahead of the turn (nothing is written: the summary is *staged* on the
  session) so the preview is the exact request, and the turn reuses the staged summary rather than paying
  for it twice. A staged summary holds while the window's start and summary are still the ones it was
  made from.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from letta_nb.llm.base import LLMClient, complete
from letta_nb.llm.tokens import estimate_tokens
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.runtime.session import EVICT_AT, AgentSession, Cut, Eviction
from letta_nb.schemas import AgentState, Message

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["REQUEST_SHARE", "SUMMARY_MAX_TOKENS", "SUMMARY_SHARE", "Staged", "Summary", "compact", "make_room",
           "stats_fields", "summarise", "summary_budget", "summary_request"]

#: Share of the room the window leaves for conversation (after instructions, memory and tools) the summary
#: may take; the rest keeps recent turns verbatim. A 2,000-token window of 300 stated facts still recalls
#: over 80% of them from the summary alone with 2/3 (tests/test_compaction.py).
SUMMARY_SHARE = 2 / 3
SUMMARY_MAX_TOKENS = 4000  # a 128k window needs no bigger summary, and it is paid on every step
REQUEST_SHARE = 0.75  # a summary request's share of the summariser's window (its reply and tokenizer gaps)
_WORDS_PER_TOKEN = 0.5  # dense summaries (names, numbers, codes) run ~2 tokens a word; prose ~1.3
_MAX_LINE_CHARS = 2000  # one long message (a pasted file, a tool result) is quoted by its start

#: What the prompt says before a model's summary, as Letta's summary message does: the messages are not lost.
LEAD = ("Older messages left the context window; they remain in recall memory (use conversation_search). "
        "A summary of them:\n")
PROMPT = (
    "You keep the running summary of a conversation between an AI agent and a user. Messages are leaving "
    "the agent's context window: fold them into the previous summary. Keep every fact the user stated "
    "(names, numbers, codes, preferences, decisions) and anything still open; drop greetings and chit-chat. "
    "Keep the summary under {words} words. Reply with the new summary only."
)


@dataclass(frozen=True)
class Summary:
    """A summary as the summariser wrote it (or the note, with ``fallback`` saying why), its cost."""

    text: str
    ms: float
    tokens: int
    fallback: str | None = None


@dataclass
class Staged:
    """A summary made ahead of the eviction that will use it (see the module docstring)."""

    base: tuple[int, str | None]  # the window's (context_start_seq, context_summary) it was made from
    cut: Cut
    task: asyncio.Task[Summary]


def summary_budget(session: AgentSession) -> int:
    """Tokens the summary may take: :data:`SUMMARY_SHARE` of the room the window leaves for conversation."""
    room = EVICT_AT * session.budget - session.fixed_tokens()
    return int(max(64, min(SUMMARY_MAX_TOKENS, SUMMARY_SHARE * room)))


def stats_fields(eviction: Eviction | None) -> dict[str, Any]:
    """The compaction fields of a step's StepStats (schemas.py) from the eviction made before its request."""
    if eviction is None:
        return {}
    return {"summary_ms": eviction.summary_ms, "summary_tokens": eviction.summary_tokens,
            "summary_fallback": eviction.fallback}


def _line(m: Message) -> str:
    role = f"tool {m.name}" if m.role == "tool" and m.name else m.role
    text = " ".join(m.text.split())
    return f"{role}: {text[:_MAX_LINE_CHARS]}"


def summary_request(previous: str | None, lines: list[str], words: int) -> list[dict[str, Any]]:
    """The summariser's chat messages: instructions with the word budget, then the previous summary and the
    evicted messages (one line each, ``role: text``)."""
    user = ("<previous_summary>\n" + (previous or "(none)") + "\n</previous_summary>\n<evicted_messages>\n"
            + "\n".join(lines) + "\n</evicted_messages>")
    return [{"role": "system", "content": PROMPT.format(words=words)}, {"role": "user", "content": user}]


def _room(llm: LLMClient, summary: str | None, words: int) -> int:
    """Tokens of evicted lines one request may carry: :data:`REQUEST_SHARE` of the summariser's window less the
    instructions and the summary so far (the rest of the window is the reply's)."""
    fixed = sum(estimate_tokens(m["content"]) + 4 for m in summary_request(summary, [], words)) + 3
    return max(256, int(REQUEST_SHARE * llm.context_window) - fixed)


async def _fold(llm: LLMClient, previous: str | None, lines: list[str], words: int) -> tuple[str, int]:
    """Fold ``lines`` into ``previous`` in as few requests as fit the summariser's window, oldest first."""
    summary, tokens, rest = previous, 0, list(lines)
    while rest:
        room, used = _room(llm, summary, words), 0
        group: list[str] = []
        while rest and (not group or used + estimate_tokens(rest[0]) + 1 <= room):
            line = rest.pop(0)
            group.append(line[: room * 4])  # a single line past the room is quoted by its start
            used += estimate_tokens(group[-1]) + 1
        done = await complete(llm, summary_request(summary, group, words), [])
        tokens += done.usage.total_tokens
        summary = (done.content or "").strip()
        if not summary:
            raise ValueError(f"model {llm.name!r} returned an empty summary")
    return summary or "", tokens


async def summarise(rt: Runtime, session: AgentSession, evicted: list[Message], previous: str | None) -> Summary:
    """The new summary of ``previous`` plus ``evicted``, by the summariser model; the fixed note (and why)
    if it fails or takes longer than ``summarizer_timeout_s``."""
    started = time.perf_counter()
    budget = summary_budget(session) - estimate_tokens(LEAD)
    timeout = rt.settings.summarizer_timeout_s
    try:
        spec = rt.settings.summarizer_model
        llm = session.llm if spec is None or spec == session.agent.model else rt.llm(spec)
        if previous and previous.startswith(LEAD):
            previous = previous[len(LEAD):]  # the summariser gets the summary alone
        text, tokens = await asyncio.wait_for(
            _fold(llm, previous, [_line(m) for m in evicted], int(budget * _WORDS_PER_TOKEN)), timeout)
    except asyncio.TimeoutError:
        return _fallback(session, evicted, started, f"timeout: no summary after {timeout:g} s (summarizer_timeout_s)")
    except Exception as e:  # a provider error, a bad spec, an empty reply: the note stands in, the turn goes on
        return _fallback(session, evicted, started, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    if estimate_tokens(text) > budget:  # a model past its word budget: its start is kept, as Letta clips
        text = text[: budget * 4 - 16].rstrip() + " [summary truncated]"
    return Summary(LEAD + text, (time.perf_counter() - started) * 1000, tokens)


def _fallback(session: AgentSession, evicted: list[Message], started: float, why: str) -> Summary:
    return Summary(session.fallback_note(evicted), (time.perf_counter() - started) * 1000, 0, why)


def _apply(session: AgentSession, cut: Cut, summary: Summary) -> None:
    session.apply_eviction(Eviction(cut.start_seq, summary.text, len(cut.evicted)))


def _base(session: AgentSession) -> tuple[int, str | None]:
    return session.agent.context_start_seq, session.agent.context_summary


def _stage(rt: Runtime, session: AgentSession, pending: list[Message]) -> None:
    """Start summarising the eviction ``pending`` would need on ``session``, unless one is staged already."""
    if session.staged is not None and session.staged.base == _base(session):
        return
    cut = session.plan_cut(pending, reserve=summary_budget(session))
    if cut is not None:
        task = asyncio.ensure_future(summarise(rt, session, cut.evicted, session.agent.context_summary))
        session.staged = Staged(_base(session), cut, task)


def _take_staged(session: AgentSession) -> Staged | None:
    staged, session.staged = session.staged, None
    if staged is not None and staged.base != _base(session):
        staged.task.cancel()  # made for a window that has moved since
        return None
    return staged


async def make_room(rt: Runtime, session: AgentSession, pending: list[Message], *,
                    stage_on: AgentSession | None = None) -> Eviction | None:
    """Evict and summarise so the step's prompt fits, applied to ``session``; None if it already fits.
    ``stage_on`` (a preview's view is a copy of it): the summary is made on that session and left staged
    there for the turn to reuse."""
    if session.plan_cut(pending) is None:
        return None
    started = time.perf_counter()
    if stage_on is not None:
        _stage(rt, stage_on, pending)
        session.staged = stage_on.staged
    done: list[tuple[Cut, Summary]] = []
    staged = _take_staged(session)
    if staged is not None:
        summary = await staged.task
        _apply(session, staged.cut, summary)
        done.append((staged.cut, summary))
    cut = session.plan_cut(pending, reserve=summary_budget(session))
    if cut is not None:  # nothing staged, or the window grew past what was staged
        summary = await summarise(rt, session, cut.evicted, session.agent.context_summary)
        _apply(session, cut, summary)
        done.append((cut, summary))
    if not done:
        return None
    return Eviction(
        done[-1][0].start_seq, done[-1][1].text, sum(len(c.evicted) for c, _ in done),
        summary_ms=sum(s.ms for _, s in done), summary_tokens=sum(s.tokens for _, s in done),
        fallback=next((s.fallback for _, s in done if s.fallback), None),
        wait_ms=(time.perf_counter() - started) * 1000,
    )


async def compact(rt: Runtime, agent: Any) -> tuple[AgentState, Eviction | None]:
    """Summarise now, whatever the window: every message but the last turn (all, if it is the only one)
    leaves the window for the summary, committed under the agent's lease. The agent, and the eviction made
    (None: the window was empty)."""
    async with rt.agent_change(agent) as (state, token):
        session = await rt.session(state.id)
        users = [i for i, m in enumerate(session.messages) if m.role == "user" and i > 0]
        keep = users[-1] if users else len(session.messages)
        evicted = session.messages[:keep]
        if not evicted:
            return state, None
        start_seq = session.messages[keep].seq if keep < len(session.messages) else state.last_seq + 1
        summary = await summarise(rt, session, evicted, state.context_summary)
        await rt.store.update_agent(state.id, token, context_start_seq=start_seq, context_summary=summary.text)
        eviction = Eviction(start_seq, summary.text, len(evicted), summary_ms=summary.ms,
                            summary_tokens=summary.tokens, fallback=summary.fallback, wait_ms=summary.ms)
    return await agent_state(rt, state.id), eviction
