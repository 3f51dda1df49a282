"""The per-turn fast paths of the model and tool side (issue 19) change nothing anyone can see.

- Unwatched and unpaced, the offline model sends its Completion alone (``Prompt.watched``): the same
  Completion, and turns that store the same messages as turns someone streams.
- An ``async def`` tool whose code never awaits runs inline, with no task or timer: the same results and
  errors as a tool that awaits, in a copy of the context as a task would have.
- ``ToolCall.parsed_arguments`` skips the repair walk only where nothing can need it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
from typing import Any

import pytest

import letta_nb
from letta_nb.llm.base import Completion, ToolCall, ToolCallDelta
from letta_nb.llm.offline import OfflineModel
from letta_nb.llm.tokens import Prompt
from letta_nb.runtime.base_tools import BASE_TOOLS
from letta_nb.runtime.events import AssistantDelta, StopEvent
from letta_nb.runtime.executor import ToolExecutor, _never_suspends
from letta_nb.runtime.tool_schema import tool_from_function

SPECS = ["offline", "offline?reply=content", "offline?calls=tagged", "offline?calls=fenced&reasoning=field",
         "offline?reasoning=none"]
SCRIPT = ["Hello there!", "My name is Ada Lovelace.", "Remember that the launch is on Friday.",
          "What is my name?", "The weather is grey today.", "When is the launch?",
          '/call core_memory_append {"label": "human", "content": "Likes tea"}']


def _events(model: OfflineModel, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[Any]:
    async def collect() -> list[Any]:
        return [e async for e in model.stream(messages, tools)]

    return asyncio.run(collect())


def _schemas() -> list[dict[str, Any]]:
    return [spec.openai_schema() for spec in BASE_TOOLS.values()]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("text", SCRIPT)
def test_unwatched_offline_stream_is_the_same_completion_alone(spec: str, text: str) -> None:
    model = OfflineModel.from_spec(spec)
    messages = [{"role": "system", "content": "You are sam.\n<memory_blocks>\n<human>\n<value>\n</value>\n"
                 "</human>\n</memory_blocks>"}, {"role": "user", "content": text}]
    watched = _events(model, Prompt(messages, 100), _schemas())
    unwatched = _events(model, Prompt(messages, 100, watched=False), _schemas())
    plain = _events(model, messages, _schemas())  # a plain list is watched
    assert len(unwatched) == 1 and isinstance(unwatched[0], Completion)
    assert len(watched) > 2 and len(plain) == len(watched)

    def same(c: Any) -> Any:  # prompt tokens: a Prompt's own estimate, a plain list's counted
        return (c.content, c.tool_calls, c.usage.completion_tokens, c.finish_reason, c.reasoning)

    assert unwatched[0].usage == watched[-1].usage
    assert same(unwatched[0]) == same(watched[-1]) == same(plain[-1])


def test_paced_offline_stream_keeps_its_deltas_when_unwatched() -> None:
    """With ``tps`` the deltas are paced: unwatched, they still come one by one (a cancel keeps the part said)."""
    model = OfflineModel(tps=1_000_000)
    messages = Prompt([{"role": "user", "content": "The weather is grey today."}], 10, watched=False)
    events = _events(model, messages, _schemas())
    assert isinstance(events[-1], Completion) and sum(isinstance(e, ToolCallDelta) for e in events) > 2


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\"]*")  # search results say when a row was made


def _stored(client: letta_nb.Client, agent_id: str) -> list[tuple[Any, ...]]:
    return [(m.role, _TIMESTAMP.sub("<time>", m.content or ""),
             tuple((c.id, c.name, c.arguments, c.recovered) for c in m.tool_calls), m.tool_call_id, m.name, m.status)
            for m in client.agents.messages.list(agent_id)]


@pytest.mark.parametrize("spec", SPECS)
def test_turns_store_the_same_with_and_without_a_watcher(client: letta_nb.Client, spec: str) -> None:
    quiet = client.agents.create("quiet", model=spec)
    watched = client.agents.create("watched", model=spec)
    for text in SCRIPT:
        response = client.agents.messages.create(quiet.id, text)
        events = list(client.agents.messages.stream(watched.id, text))
        stop = events[-1]
        assert isinstance(stop, StopEvent) and stop.stop_reason == response.stop_reason
        assert stop.usage == response.usage
        replies = [m.text for m in client.agents.messages.list(watched.id)[-len(response.messages):]
                   if m.message_type == "assistant_message" and m.role == "assistant"]
        streamed = "".join(e.text for e in events if isinstance(e, AssistantDelta))
        assert streamed == "".join(replies)
    assert _stored(client, quiet.id) == _stored(client, watched.id)
    assert len(_stored(client, quiet.id)) >= 3 * len(SCRIPT)
    assert client.agents.blocks.retrieve(quiet.id, "human").value == \
        client.agents.blocks.retrieve(watched.id, "human").value


# ---- tools that never await run inline ------------------------------------------------------------------

_SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def _echo(text: str) -> str:
    """What both tools below do: leave a context variable set (as careless tools do), raise as ``text`` says,
    else echo it with the task it ran in."""
    _SEEN.set("set by the tool")
    if text == "raise":
        raise ValueError("bad text")
    if text == "cancel":
        raise asyncio.CancelledError()
    if text == "exit":
        raise SystemExit("asked to exit")
    return f"{text} in {asyncio.current_task()!r:.0}{id(asyncio.current_task())}"


async def plain_tool(text: str) -> str:
    """Echo without awaiting; leaves a context variable set, as careless tools do."""
    return _echo(text)


async def awaiting_tool(text: str) -> str:
    """The same after one await: runs in a task of its own under its timeout."""
    await asyncio.sleep(0)
    return _echo(text)


def test_which_tools_never_suspend() -> None:
    inline = {name for name, spec in BASE_TOOLS.items() if spec.func is not None and _never_suspends(spec.func)}
    assert inline == {"send_message", "core_memory_append", "core_memory_replace", "memory_insert",
                      "memory_replace", "memory_rethink"}

    async def with_async_with(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    async def with_async_for(items: Any) -> None:
        async for _ in items:
            pass

    async def with_async_comprehension(items: Any) -> list[Any]:
        return [x async for x in items]

    async def with_nested_await() -> int:
        async def inner() -> int:
            return 1
        return await inner()

    async def with_nested_sync_generator() -> list[int]:
        return list(i for i in range(3))  # a generator expression does not suspend the coroutine

    def sync_tool() -> None:
        pass

    assert _never_suspends(plain_tool) and _never_suspends(with_nested_sync_generator)
    assert not any(map(_never_suspends, [awaiting_tool, with_async_with, with_async_for,
                                         with_async_comprehension, with_nested_await, sync_tool]))


@pytest.mark.parametrize("text", ["hello", "raise", "cancel", "exit"])
def test_a_tool_that_never_awaits_runs_inline_with_the_same_results(text: str) -> None:
    specs = {s.name: s for s in (tool_from_function(plain_tool, timeout=5), tool_from_function(awaiting_tool))}

    async def main() -> tuple[list[Any], str, int]:
        _SEEN.set("the caller's")
        async with ToolExecutor() as executor:
            results = await executor.execute([ToolCall("a", "plain_tool", json.dumps({"text": text})),
                                              ToolCall("b", "awaiting_tool", json.dumps({"text": text}))], specs)
        return results, _SEEN.get(), id(asyncio.current_task())

    (inline, tasked), seen, caller = asyncio.run(main())
    assert seen == "the caller's"  # the tool's context change stayed in its copy, as in a task of its own
    assert (inline.status, inline.error_type) == (tasked.status, tasked.error_type)
    if text == "hello":
        assert inline.content == f"hello in {caller}"  # inline: the caller's task, no task of its own
        assert tasked.content != f"hello in {caller}" and tasked.content.startswith("hello in ")
    else:
        assert inline.status == "error" and inline.content == tasked.content
        assert inline.error_type == {"raise": "ValueError", "cancel": "CancelledError", "exit": "SystemExit"}[text]


def test_a_turn_runs_send_message_inline_and_replies(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam")
    r = client.agents.messages.create(agent.id, "The weather is grey today.")
    assert r.steps[-1].tool_names == ("send_message",) and r.stop_reason == "end_turn"
    assert [m.status for m in r.messages if m.role == "tool"] == ["success"]


# ---- parsed arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "expected"), [
    ('{"message": "plain"}', {"message": "plain"}),
    ('{"message": "caf\u00e9 \U0001f600"}', {"message": "caf\u00e9 \U0001f600"}),
    ('{"message": "caf\\u00e9"}', {"message": "caf\u00e9"}),
    ('{"message": "lone \\ud800 x"}', {"message": "lone \ufffd x"}),
    ('{"message": "nul \\u0000 x"}', {"message": "nul \ufffd x"}),
    ('{"lone \\udc00": ["\\ud83d\\ude00", "\\ud83d"]}', {"lone \ufffd": ["\U0001f600", "\ufffd"]}),
    ('{"message": "raw \ud800 x"}', {"message": "raw \ufffd x"}),
])
def test_parsed_arguments_repair_what_needs_it(arguments: str, expected: dict[str, Any]) -> None:
    assert ToolCall("c", "send_message", arguments).parsed_arguments() == expected


# ---- tool rules read only the current turn ----------------------------------------------------------------


def test_rule_state_of_a_turn_reads_only_the_turn_and_matches_the_whole_window() -> None:
    from types import SimpleNamespace

    from letta_nb.runtime.rule_solver import REFUSAL, RuleState

    def m(role: str, content: str = "", name: str | None = None, status: str | None = None) -> Any:
        return SimpleNamespace(role=role, content=content, name=name, status=status)

    heartbeat = '{"type": "heartbeat", "reason": "continue"}'
    history = [m("user", "hi"), m("tool", "ok", "search", "success"), m("user", "again"),
               m("tool", "boom", "search", "error"), m("user", heartbeat),
               m("tool", REFUSAL + " no", "search", "error"), m("tool", "found", "fetch", "success")]
    rules = [{"type": "run_first", "tool_name": "search"}]
    for cut in range(len(history) + 1):
        for pending in ([], [m("user", "new words")], [m("tool", "x", "fetch", "success")], [m("user", heartbeat)]):
            committed = history[:cut]
            fast = RuleState.of_turn(rules, {"search", "fetch"}, committed, pending)
            whole = RuleState.from_messages(rules, {"search", "fetch"}, [*committed, *pending])
            assert fast is not None and (fast.history, fast.exit_tried) == (whole.history, whole.exit_tried)
    assert RuleState.of_turn([], {"search"}, history, []) is None


def test_the_summariser_keeps_the_words_keywords_would() -> None:
    """The offline summariser filters a statement's words without a keywords() pass per word: the same words."""
    from letta_nb.llm._offline_reading import _STOPWORDS, keywords
    from letta_nb.llm._offline_summary import _statement

    words = sorted(_STOPWORDS) + [w.upper() for w in _STOPWORDS] + ["a", "I", "x1", "Ss", "cries", "boxes", "42"]
    for word in words:
        assert bool(keywords(word)) == (len(word) >= 2 and word.lower() not in _STOPWORDS), word
    assert _statement("My Box holds the 17 umbrellas and a kettle") == ("Box", "holds 17 umbrellas kettle")


@pytest.mark.parametrize("args", [
    {"message": 'h\u00e9llo "q" \\ \n\t \x01 \u2028 \U0001f600'}, {"label": "human", "content": "Name: Ada"},
    {"message": "lone \ud800"}, {"query": "x", "request_heartbeat": True}, {}, {"x": [1, "a"], "y": None},
])
def test_offline_plans_write_arguments_as_json_dumps_would(args: dict[str, Any]) -> None:
    from letta_nb.llm._offline_rules import _dumps

    assert _dumps(**args) == json.dumps(args, ensure_ascii=False)


def test_complete_asks_for_no_deltas_and_gets_the_same_completion() -> None:
    from letta_nb.llm.base import complete

    seen: list[Any] = []

    class Recording(OfflineModel):
        def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any = None) -> Any:
            seen.append(messages)
            return super().stream(messages, tools, tool_choice)

    messages = [{"role": "user", "content": "The weather is grey today."}]
    model = Recording()
    done = asyncio.run(complete(model, messages, _schemas()))
    [sent] = seen
    assert isinstance(sent, Prompt)
    assert not sent.watched and sent.tokens is None and list(sent) == messages
    streamed = _events(model, messages, _schemas())[-1]
    assert (done.content, done.tool_calls, done.usage) == (streamed.content, streamed.tool_calls, streamed.usage)
