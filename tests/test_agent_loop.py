"""The agent loop end to end: memory, base tools, user tools, steps, context budget, locks, streaming, cancel.

Every test drives a real runtime over a real SQLite file (``letta_nb.connect(tmp_path / "s.db")``) with the
deterministic offline model, and checks what a user can observe: the Response, recall memory
(``messages.list``), the blocks API, stream events and, where it matters, the rows in the store. The
offline model's ``/call TOOL {json}`` lines make it call exactly that tool with exactly those (possibly
malformed) arguments, and after a tool result it answers with ``send_message``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.registry import resolve_model
from letta_nb.llm.tokens import message_tokens, tools_tokens
from letta_nb.runtime.events import (
    AssistantDelta,
    ReasoningDelta,
    StepEvent,
    StopEvent,
    ToolCallEvent,
    ToolReturnEvent,
)
from letta_nb.store.sqlite_driver import sqlite_module

SMALL = "offline?context_window=2000"
SLOW = "offline?latency_ms=300&tps=20"


# ---- helpers ---------------------------------------------------------------------------------------------


def on_loop(client: letta_nb.Client, coro: Any) -> Any:
    """Run a runtime coroutine (store / session internals) on the client's runtime loop."""
    return client._thread.run(coro)


def call(name: str, raw: str | None = None, **args: Any) -> str:
    """A ``/call`` line for the offline model: exactly this tool, with these raw arguments."""
    return f"/call {name} {raw if raw is not None else json.dumps(args)}"


def tool_messages(messages: list[letta_nb.Message], name: str | None = None) -> list[letta_nb.Message]:
    return [m for m in messages if m.role == "tool" and m.name != "send_message" and (name is None or m.name == name)]


def sql(db: Path | str, query: str, *params: Any) -> list[tuple]:
    # The store's own sqlite module: another SQLite copy in this process would break the store's locks.
    conn = sqlite_module().connect(str(db))
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def assert_consistent(client: letta_nb.Client, agent: Any) -> list[letta_nb.Message]:
    """Recall, step rows, the agent row and the cached session all tell the same story."""
    agent_id = on_loop(client, client.runtime.resolve_agent(agent))
    msgs = client.agents.messages.list(agent_id)
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1)), "seq must be contiguous from 1"
    stored = on_loop(client, client.runtime.store.load_agent(agent_id))
    assert stored.last_seq == len(msgs)
    steps = on_loop(client, client.runtime.store.step_rows(agent_id))
    assert sum(s.n_messages for s in steps) == len(msgs)
    step_ids = {s.id for s in steps}
    assert all(m.step_id in step_ids for m in msgs)
    calls: dict[str, str | None] = {}
    for m in msgs:
        for c in m.tool_calls:
            calls[c.id] = m.step_id
        if m.role == "tool":
            assert calls.get(m.tool_call_id) == m.step_id, f"tool message {m.seq} answers no call of its step"
    session = on_loop(client, client.runtime.session(agent_id))
    assert session.agent.last_seq == stored.last_seq
    assert {b.label: b.value for b in session.agent.blocks} == {b.label: b.value for b in stored.blocks}
    assert client.runtime.running == {}
    assert len(client.runtime.locks) == 0
    return msgs


class RecordingModel:
    """Wraps a model and keeps every prompt (messages, tools) it was asked to complete."""

    supports_parallel_tool_calls = True

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.context_window = inner.context_window
        self.prompts: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]):
        self.prompts.append(([dict(m) for m in messages], list(tools)))
        async for event in self.inner.stream(messages, tools):
            yield event


def record_prompts(client: letta_nb.Client, spec: str = "offline") -> RecordingModel:
    """Make ``spec`` resolve to a recording wrapper in this runtime (install before creating the agent)."""
    recorder = RecordingModel(resolve_model(spec))
    client.runtime.model_cache.set(spec, recorder)
    return recorder


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


# ---- tools used by the tests (module level so their source can be stored and sandboxed) ------------------

_SHARED: dict[str, Any] = {}


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


async def shout(text: str) -> str:
    """Upper-case a text, asynchronously.

    Args:
        text: What to shout.
    """
    await asyncio.sleep(0)
    return text.upper() + "!"


def explode(x: int) -> int:
    """Always fails.

    Args:
        x: Ignored.
    """
    raise ValueError(f"cannot handle x={x}")


async def hang_async() -> str:
    """Never returns in time."""
    await asyncio.sleep(60)
    return "too late"


def hang_sync() -> str:
    """Blocks its thread until the test releases it."""
    _SHARED["hang_release"].wait(30)
    return "released"


def meet_a() -> str:
    """Waits at the barrier with meet_b."""
    _SHARED["barrier"].wait()
    return "a met b"


def meet_b() -> str:
    """Waits at the barrier with meet_a."""
    _SHARED["barrier"].wait()
    return "b met a"


def block_until_released() -> str:
    """Signals that it started, then waits for the test."""
    _SHARED["started"].set()
    _SHARED["release"].wait(30)
    return "released"


def read_env() -> dict:
    """Report what the tool's process can see of the environment."""
    import os

    return {
        "key": os.environ.get("OPENAI_API_KEY"),
        "marker": os.environ.get("LETTA_NB_TEST_MARKER"),
        "pid": os.getpid(),
    }


# ---- core memory, recall, Response ----------------------------------------------------------------------


def test_memory_blocks_render_into_the_system_prompt(client: letta_nb.Client) -> None:
    recorder = record_prompts(client)
    agent = client.agents.create(
        "sam",
        memory_blocks=[
            {"label": "persona", "value": "I am Sam, a terse librarian.", "read_only": True},
            {"label": "human", "value": "Name: Ada"},
            {"label": "project", "value": "Cataloguing rare maps.", "limit": 300, "description": "What we work on."},
        ],
    )
    client.agents.messages.create(agent, "hello")

    system = recorder.prompts[0][0][0]
    assert system["role"] == "system"
    text = system["content"]
    assert text.startswith(agent.system)
    for label, value in [("persona", "I am Sam, a terse librarian."), ("human", "Name: Ada"),
                         ("project", "Cataloguing rare maps.")]:
        assert f"<{label}>" in text and f"</{label}>" in text
        assert f"<value>\n{value}\n</value>" in text
    assert "What we work on." in text
    assert "chars_limit=300" in text and "chars_current=22" in text
    assert "read_only=true" in text  # only the persona block is read-only
    assert text.count("read_only=true") == 1
    tool_names = {t["function"]["name"] for t in recorder.prompts[0][1]}
    assert {"send_message", "core_memory_append", "archival_memory_search", "conversation_search"} <= tool_names


def test_stated_fact_lands_in_human_block_survives_reopen_and_answers_questions(db_path: Path) -> None:
    with letta_nb.connect(db_path) as c:
        agent = c.agents.create("sam")
        r = c.agents.messages.create(agent, "My name is Ada.")
        assert r.stop_reason == "end_turn"
        assert c.agents.blocks.retrieve(agent, "human").value == "Name: Ada"
        assert "Name: Ada" in r.text

        # Recall: user, the memory call, its result, the reply, its result -- in seq order.
        recall = c.agents.messages.list(agent)
        assert [m.message_type for m in recall] == [
            "user_message", "tool_call_message", "tool_return_message", "assistant_message", "tool_return_message",
        ]
        assert [m.id for m in recall] == [m.id for m in r.messages]
        assert recall[0].content == "My name is Ada."
        append_call = recall[1].tool_calls[0]
        assert append_call.name == "core_memory_append"
        assert json.loads(append_call.arguments) == {"label": "human", "content": "Name: Ada"}
        assert recall[2].tool_call_id == append_call.id and recall[2].status == "success"
        assert recall[3].tool_calls[0].name == "send_message" and recall[4].tool_call_id == recall[3].tool_calls[0].id

        # Steps carry timings and usage; the response's usage is their sum.
        assert [s.step_index for s in r.steps] == [0, 1]
        assert [s.tool_names for s in r.steps] == [("core_memory_append",), ("send_message",)]
        assert [s.stop_reason for s in r.steps] == [None, "end_turn"]
        for s in r.steps:
            assert s.prompt_tokens > 0 and s.completion_tokens > 0
            assert min(s.llm_ms, s.tools_ms, s.db_ms) >= 0 and s.total_ms >= s.llm_ms
        assert r.usage.prompt_tokens == sum(s.prompt_tokens for s in r.steps)
        assert r.usage.completion_tokens == sum(s.completion_tokens for s in r.steps)
        assert set(r.timings) == {"llm_ms", "tools_ms", "db_ms", "total_ms"}
        assert r.run_id
        assert_consistent(c, agent.id)

    with letta_nb.connect(db_path) as c:
        recorder = record_prompts(c)
        assert c.agents.blocks.retrieve("sam", "human").value == "Name: Ada"
        assert len(c.agents.messages.list("sam")) == 5
        r = c.agents.messages.create("sam", "What is my name?")
        assert r.stop_reason == "end_turn"
        assert '"Name: Ada"' in r.text  # quoted from core memory
        assert "<value>\nName: Ada\n</value>" in recorder.prompts[0][0][0]["content"]
        # the reopened session's prompt still carries the whole earlier turn
        assert [m["role"] for m in recorder.prompts[0][0][1:]] == ["user", "assistant", "tool", "assistant", "tool",
                                                                    "user"]
        assert_consistent(c, "sam")


# ---- base tools via /call --------------------------------------------------------------------------------

MEMORY = [
    {"label": "persona", "value": "I am Sam.", "read_only": True},
    {"label": "human", "value": "Name: Ada\nLikes: tea"},
    {"label": "notes", "value": "alpha\nbeta\nalpha", "limit": 40},
]


@pytest.fixture
def mem_agent(client: letta_nb.Client) -> letta_nb.AgentState:
    return client.agents.create("mem", memory_blocks=MEMORY)


@pytest.mark.parametrize(
    ("line", "label", "expected"),
    [
        (call("core_memory_append", label="human", content="Job: pilot"), "human", "Name: Ada\nLikes: tea\nJob: pilot"),
        (call("core_memory_replace", label="human", old_content="tea", new_content="coffee"), "human",
         "Name: Ada\nLikes: coffee"),
        (call("core_memory_replace", label="human", old_content="\nLikes: tea", new_content=""), "human", "Name: Ada"),
        (call("memory_insert", label="human", new_str="Job: pilot", insert_line=0), "human",
         "Job: pilot\nName: Ada\nLikes: tea"),
        (call("memory_insert", label="human", new_str="Job: pilot", insert_line=1), "human",
         "Name: Ada\nJob: pilot\nLikes: tea"),
        (call("memory_insert", label="human", new_str="Job: pilot"), "human", "Name: Ada\nLikes: tea\nJob: pilot"),
        (call("memory_replace", label="notes", old_str="beta", new_str="gamma"), "notes", "alpha\ngamma\nalpha"),
        (call("memory_rethink", label="human", new_memory="Name: Ada Lovelace"), "human", "Name: Ada Lovelace"),
    ],
    ids=["append", "replace", "replace-delete", "insert-0", "insert-1", "insert-end", "memory_replace", "rethink"],
)
def test_memory_tools_edit_blocks_with_letta_semantics(
    client: letta_nb.Client, mem_agent: letta_nb.AgentState, line: str, label: str, expected: str
) -> None:
    others = {b.label: b.value for b in client.agents.blocks.list(mem_agent) if b.label != label}
    r = client.agents.messages.create(mem_agent, line)
    assert r.stop_reason == "end_turn"
    [result] = tool_messages(r.messages)
    assert result.status == "success", result.content
    assert client.agents.blocks.retrieve(mem_agent, label).value == expected
    assert {b.label: b.value for b in client.agents.blocks.list(mem_agent) if b.label != label} == others
    assert "saved" in r.text  # the model confirms the write
    assert_consistent(client, mem_agent.id)


@pytest.mark.parametrize(
    ("line", "label", "error_type", "fragment"),
    [
        (call("core_memory_replace", label="human", old_content="coffee", new_content="tea"), "human",
         "MemoryEditError", "'coffee' not found in memory block 'human'"),
        (call("core_memory_replace", label="human", old_content="", new_content="x"), "human",
         "MemoryEditError", "must not be empty"),
        (call("memory_replace", label="notes", old_str="alpha", new_str="omega"), "notes",
         "MemoryEditError", "appears 2 times"),
        (call("memory_replace", label="notes", old_str="delta", new_str="omega"), "notes",
         "MemoryEditError", "does not appear verbatim"),
        (call("core_memory_append", label="notes", content="x" * 30), "notes",
         "BlockLimitError", "over its limit of 40"),
        (call("memory_rethink", label="notes", new_memory="y" * 41), "notes",
         "BlockLimitError", "would hold 41 characters"),
        (call("core_memory_append", label="persona", content="I am evil."), "persona",
         "ReadOnlyBlockError", "read-only"),
        (call("memory_insert", label="human", new_str="x", insert_line=7), "human",
         "MemoryEditError", "out of range"),
        (call("memory_rethink", label="humn", new_memory="x"), "human",
         "BlockNotFoundError", "Did you mean 'human'?"),
    ],
    ids=["replace-missing", "replace-empty", "ambiguous", "unique-missing", "append-over-limit",
         "rethink-over-limit", "read-only", "insert-range", "unknown-label"],
)
def test_memory_tool_errors_are_tool_results_and_change_nothing(
    client: letta_nb.Client, mem_agent: letta_nb.AgentState, line: str, label: str, error_type: str, fragment: str
) -> None:
    before = {b.label: b.value for b in client.agents.blocks.list(mem_agent)}
    r = client.agents.messages.create(mem_agent, line)
    assert r.stop_reason == "end_turn"  # the turn completes; the model read the error
    first = tool_messages(r.messages)[0]
    assert first.status == "error"
    assert first.content.startswith(f"{error_type}: ")
    assert fragment in first.content
    after = {b.label: b.value for b in client.agents.blocks.list(mem_agent)}
    assert after == before
    recall = assert_consistent(client, mem_agent.id)
    stored = next(m for m in recall if m.id == first.id)
    assert stored.status == "error" and stored.content == first.content


def test_archival_insert_and_search_tools(client: letta_nb.Client) -> None:
    agent = client.agents.create("arch")
    r = client.agents.messages.create(agent, call("archival_memory_insert", content="The launch code is 4711.",
                                                  tags=["secret"]))
    [result] = tool_messages(r.messages)
    assert result.status == "success"
    passages = client.agents.passages.list(agent)
    assert [(p.text, p.tags) for p in passages] == [("The launch code is 4711.", ("secret",))]
    assert "archival memory" in r.text

    client.agents.passages.create(agent, "Penguins live in the southern hemisphere.", tags=["birds"])
    r = client.agents.messages.create(agent, call("archival_memory_search", query="launch code"))
    [result] = tool_messages(r.messages)
    hits = json.loads(result.content)
    assert hits[0]["text"] == "The launch code is 4711." and hits[0]["tags"] == ["secret"]
    assert hits[0]["score"] >= hits[-1]["score"]
    assert "4711" in r.text

    r = client.agents.messages.create(agent, call("archival_memory_search", query="launch code", tags=["birds"]))
    assert [h["text"] for h in json.loads(tool_messages(r.messages)[0].content)] == [
        "Penguins live in the southern hemisphere."]
    r = client.agents.messages.create(
        agent, call("archival_memory_search", query="x", tags=["secret", "birds"], tag_match_mode="all"))
    assert json.loads(tool_messages(r.messages)[0].content) == []
    r = client.agents.messages.create(agent, call("archival_memory_search", query="x", tag_match_mode="most"))
    first = tool_messages(r.messages)[0]
    assert first.status == "error" and "'tag_match_mode'" in first.content and '"most"' in first.content
    assert_consistent(client, agent.id)


def test_conversation_search_and_send_message_tools(client: letta_nb.Client) -> None:
    agent = client.agents.create("conv")
    client.agents.messages.create(agent, "hello")
    client.agents.messages.create(agent, "I like green tea.")
    r = client.agents.messages.create(agent, call("conversation_search", query="green tea"))
    [result] = tool_messages(r.messages)
    assert result.status == "success"
    found = json.loads(result.content)
    assert any(f["role"] == "user" and f["content"] == "I like green tea." for f in found)
    assert all(f["role"] in ("user", "assistant") for f in found)
    assert "/call" not in " ".join(f["content"] for f in found)  # the running turn is not searched
    assert 'You told me earlier: "I like green tea."' in r.text

    r = client.agents.messages.create(agent, call("send_message", message="Hi from a direct call."))
    assert r.text == "Hi from a direct call."
    assert len(r.steps) == 1 and r.steps[0].tool_names == ("send_message",) and r.stop_reason == "end_turn"

    r = client.agents.messages.create(agent, call("send_message", message="   "))
    reply = next(m for m in r.messages if m.role == "tool")
    assert reply.name == "send_message" and reply.status == "error" and "non-empty" in reply.content
    assert_consistent(client, agent.id)


# ---- multi-step turns and max_steps ---------------------------------------------------------------------


def test_non_terminal_tool_calls_continue_until_send_message(client: letta_nb.Client) -> None:
    agent = client.agents.create("steps")
    r = client.agents.messages.create(agent, "What is my favourite colour?")
    assert r.stop_reason == "end_turn"
    assert [s.tool_names for s in r.steps] == [("archival_memory_search",), ("conversation_search",),
                                               ("send_message",)]
    assert [s.stop_reason for s in r.steps] == [None, None, "end_turn"]
    assert "I don't know that yet" in r.text
    msgs = assert_consistent(client, agent.id)
    assert len({m.step_id for m in msgs}) == 3


def test_max_steps_stops_a_model_that_keeps_calling_tools(client: letta_nb.Client) -> None:
    agent = client.agents.create("bounded", max_steps=2)
    events = list(client.agents.messages.stream(agent, "What is my favourite colour?"))
    assert isinstance(events[-1], StopEvent) and events[-1].stop_reason == "max_steps"
    msgs = assert_consistent(client, agent.id)
    assert [m.message_type for m in msgs] == ["user_message", "tool_call_message", "tool_return_message",
                                              "tool_call_message", "tool_return_message"]
    steps = on_loop(client, client.runtime.store.step_rows(agent.id))
    assert [s.stop_reason for s in steps] == [None, None]

    r = client.agents.messages.create(agent, "What is my favourite colour?")
    assert r.stop_reason == "max_steps" and len(r.steps) == 2 and r.text == ""
    # the agent is usable afterwards
    r = client.agents.messages.create(agent, call("send_message", message="still here"))
    assert r.stop_reason == "end_turn" and r.text == "still here"
    assert_consistent(client, agent.id)


def test_max_steps_one_with_a_user_tool(client: letta_nb.Client) -> None:
    agent = client.agents.create("one", tools=[add], max_steps=1)
    r = client.agents.messages.create(agent, call("add", a=1, b=2))
    assert r.stop_reason == "max_steps"
    assert [s.tool_names for s in r.steps] == [("add",)]
    assert tool_messages(r.messages)[0].content == "3"
    assert r.text == ""
    assert_consistent(client, agent.id)


def test_several_call_lines_make_several_calls_in_one_step(client: letta_nb.Client) -> None:
    agent = client.agents.create("multi", tools=[add])
    r = client.agents.messages.create(agent, call("add", a=1, b=2) + "\n" + call("add", a=10, b=20))
    assert r.steps[0].tool_names == ("add", "add")
    assert [m.content for m in tool_messages(r.messages)] == ["3", "30"]
    assert r.stop_reason == "end_turn" and "3" in r.text and "30" in r.text
    assert_consistent(client, agent.id)


# ---- user tools ------------------------------------------------------------------------------------------


def test_sync_and_async_user_tools(client: letta_nb.Client) -> None:
    agent = client.agents.create("tools", tools=[add, shout])
    assert {"add", "shout"} <= set(client.agents.tools.list(agent))
    r = client.agents.messages.create(agent, call("add", a=2, b=3))
    [result] = tool_messages(r.messages)
    assert (result.name, result.status, result.content) == ("add", "success", "5")
    assert "The tool add returned: 5" in r.text

    r = client.agents.messages.create(agent, call("shout", text="hi there"))
    [result] = tool_messages(r.messages)
    assert (result.name, result.status, result.content) == ("shout", "success", "HI THERE!")
    assert_consistent(client, agent.id)


def test_a_raising_tool_becomes_an_error_result_and_the_turn_completes(client: letta_nb.Client) -> None:
    agent = client.agents.create("boom", tools=[explode])
    r = client.agents.messages.create(agent, call("explode", x=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error"
    assert result.content == "ValueError: cannot handle x=3"
    assert r.stop_reason == "end_turn" and "failed" in r.text
    records = [t for t in client.runtime.tool_calls if t.name == "explode"]
    assert [(t.status, t.error_type, t.agent_id) for t in records] == [("error", "ValueError", agent.id)]
    assert_consistent(client, agent.id)
    r = client.agents.messages.create(agent, call("send_message", message="next"))
    assert r.text == "next"


def test_a_hanging_tool_times_out_as_an_error_result(client: letta_nb.Client) -> None:
    _SHARED["hang_release"] = threading.Event()
    client.tools.upsert_from_function(hang_async, timeout=0.3)
    client.tools.upsert_from_function(hang_sync, timeout=0.3)
    agent = client.agents.create("hang", tools=["hang_async", "hang_sync"])
    try:
        for name in ("hang_async", "hang_sync"):
            r = client.agents.messages.create(agent, call(name))
            [result] = tool_messages(r.messages)
            assert result.status == "error"
            assert result.content == "TimeoutError: timed out after 0.3s"
            assert r.stop_reason == "end_turn"
    finally:
        _SHARED["hang_release"].set()
    assert_consistent(client, agent.id)


def test_malformed_json_arguments_are_an_error_naming_the_problem(client: letta_nb.Client) -> None:
    agent = client.agents.create("json", tools=[add])
    r = client.agents.messages.create(agent, "/call add {not json")
    [result] = tool_messages(r.messages)
    assert result.status == "error"
    assert result.content.startswith("InvalidArgumentError: arguments of 'add' are not valid JSON")
    assert "Expecting property name enclosed in double quotes" in result.content
    assert r.messages[1].tool_calls[0].arguments == "{not json"  # stored as the model sent it

    r = client.agents.messages.create(agent, call("add", a="two", b=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "'a'" in result.content
    r = client.agents.messages.create(agent, call("add", a=1, c=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "Unexpected argument 'c'" in result.content
    assert_consistent(client, agent.id)


def test_unknown_tool_is_an_error_with_suggestions(client: letta_nb.Client) -> None:
    agent = client.agents.create("unknown", tools=[add])
    r = client.agents.messages.create(agent, "/call nope {}")
    [result] = tool_messages(r.messages)
    assert result.status == "error" and result.content.startswith("ToolNotFoundError: No tool named 'nope'.")
    assert "'add'" in result.content and "'core_memory_append'" in result.content  # lists what exists

    r = client.agents.messages.create(agent, "/call core_memory_apend {}")
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "Did you mean 'core_memory_append'" in result.content
    assert r.stop_reason == "end_turn"
    assert_consistent(client, agent.id)


def test_parallel_safe_tools_run_concurrently(client: letta_nb.Client) -> None:
    _SHARED["barrier"] = threading.Barrier(2, timeout=5)
    client.tools.upsert_from_function(meet_a, parallel_safe=True)
    client.tools.upsert_from_function(meet_b, parallel_safe=True)
    agent = client.agents.create("parallel", tools=["meet_a", "meet_b"])
    r = client.agents.messages.create(agent, "/call meet_a {}\n/call meet_b {}")
    results = tool_messages(r.messages)
    # Each waits for the other at the barrier: run one after the other, both would break it.
    assert [(m.name, m.status, m.content) for m in results] == [("meet_a", "success", "a met b"),
                                                                ("meet_b", "success", "b met a")]
    assert_consistent(client, agent.id)


def test_tools_that_are_not_parallel_safe_run_one_at_a_time(client: letta_nb.Client) -> None:
    _SHARED["barrier"] = threading.Barrier(2, timeout=0.5)
    client.tools.upsert_from_function(meet_a)
    client.tools.upsert_from_function(meet_b)
    agent = client.agents.create("serial", tools=["meet_a", "meet_b"])
    r = client.agents.messages.create(agent, "/call meet_a {}\n/call meet_b {}")
    results = tool_messages(r.messages)
    assert [(m.status, m.content.split(":")[0]) for m in results] == [("error", "BrokenBarrierError")] * 2


def test_sandboxed_tool_does_not_see_api_keys(client: letta_nb.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    monkeypatch.setenv("LETTA_NB_TEST_MARKER", "visible")
    client.tools.upsert_from_function(read_env, sandbox=True, timeout=30)
    agent = client.agents.create("sandboxed", tools=["read_env"])
    r = client.agents.messages.create(agent, "/call read_env {}")
    [result] = tool_messages(r.messages)
    assert result.status == "success", result.content
    seen = json.loads(result.content)
    assert seen["key"] is None
    assert seen["marker"] == "visible"  # the environment is passed on, minus the secrets
    assert seen["pid"] != os.getpid()
    assert "sk-test-SECRET" not in json.dumps([m.content for m in client.agents.messages.list(agent)])


# ---- the context window ---------------------------------------------------------------------------------


def _fill_small_window(client: letta_nb.Client, n: int = 40) -> tuple[letta_nb.AgentState, RecordingModel]:
    recorder = record_prompts(client, SMALL)
    agent = client.agents.create("small", model=SMALL)
    client.agents.messages.create(agent, "hello")
    for i in range(n - 1):
        r = client.agents.messages.create(agent, f"Entry {i:02d}: the weather stays fine and I keep writing.")
        assert r.stop_reason == "end_turn"
    return agent, recorder


def test_context_window_evicts_from_the_prompt_but_never_from_recall(client: letta_nb.Client) -> None:
    agent, recorder = _fill_small_window(client)
    recall = assert_consistent(client, agent.id)
    users = [m for m in recall if m.role == "user"]
    assert len(users) == 40 and len(recall) == 120

    state = client.agents.retrieve(agent)
    assert state.context_start_seq > 1
    assert state.context_summary and "recall memory" in state.context_summary
    assert "Entry" in state.context_summary
    [(start, summary)] = sql(client.runtime.store.location.sqlite_path,
                             "SELECT context_start_seq, context_summary FROM agents WHERE id = ?", agent.id)
    assert (start, summary) == (state.context_start_seq, state.context_summary)

    session = on_loop(client, client.runtime.session(agent.id))
    assert session.messages[0].role == "user" and session.messages[0].seq == state.context_start_seq
    assert len(session.messages) < len(recall)
    # The model saw the summary, and no prompt ever started its history with a tool message.
    assert "<conversation_summary>" in recorder.prompts[-1][0][0]["content"]
    for messages, _ in recorder.prompts:
        assert messages[0]["role"] == "system"
        assert messages[1]["role"] == "user"
        ids = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
        assert all(m["tool_call_id"] in ids for m in messages if m["role"] == "tool")


def test_context_window_prompt_stays_under_the_window(client: letta_nb.Client) -> None:
    agent, recorder = _fill_small_window(client)
    sizes = [sum(message_tokens(m) for m in messages) + tools_tokens(tools) for messages, tools in recorder.prompts]
    session = on_loop(client, client.runtime.session(agent.id))
    assert max(sizes) <= 2000, f"largest prompt {max(sizes)} tokens"
    assert session.prompt_tokens() <= 2000


def test_oversized_input_is_rejected_and_nothing_is_written(client: letta_nb.Client) -> None:
    agent = client.agents.create("small", model=SMALL)
    with pytest.raises(InvalidArgumentError, match="context window"):
        client.agents.messages.create(agent, "word " * 1000)  # ~1250 tokens > half of 2000
    assert client.agents.messages.list(agent) == []
    assert on_loop(client, client.runtime.store.step_rows(agent.id)) == []
    assert client.agents.retrieve(agent).last_seq == 0
    assert len(client.runtime.locks) == 0
    r = client.agents.messages.create(agent, "hello")
    assert r.stop_reason == "end_turn" and r.messages[0].seq == 1
    assert_consistent(client, agent.id)


# ---- concurrency and locks ------------------------------------------------------------------------------


def test_one_agent_fifty_messages_from_five_threads_never_interleave(client: letta_nb.Client) -> None:
    agent = client.agents.create("busy")
    client.agents.messages.create(agent, "hello")  # first contact gets a greeting, not an echo
    errors: list[BaseException] = []

    def sender(t: int) -> None:
        try:
            for j in range(10):
                client.agents.messages.create(agent.id, f"T{t}M{j:02d} ping")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and not any(th.is_alive() for th in threads)

    recall = assert_consistent(client, agent.id)
    tags = [m.content.split()[0] for m in recall if m.role == "user"][1:]
    assert len(tags) == 50 and len(set(tags)) == 50
    for t in range(5):
        assert [x for x in tags if x.startswith(f"T{t}M")] == [f"T{t}M{j:02d}" for j in range(10)]
    # Between two user messages: exactly that message's reply and its result (turns never interleave).
    user_idx = [i for i, m in enumerate(recall) if m.role == "user"] + [len(recall)]
    for a, b in zip(user_idx[1:-1], user_idx[2:]):
        turn = recall[a:b]
        assert [m.message_type for m in turn] == ["user_message", "assistant_message", "tool_return_message"]
        assert turn[1].text.startswith(f'Noted: "{turn[0].content}"')
    waits = [w for w in client.runtime.locks.waits if w.agent_id == agent.id]
    assert len(waits) >= 51
    assert len(client.runtime.locks) == 0


def test_two_agents_progress_independently(client: letta_nb.Client) -> None:
    _SHARED["started"], _SHARED["release"] = threading.Event(), threading.Event()
    blocked = client.agents.create("blocked", tools=[block_until_released])
    free = client.agents.create("free")
    out: dict[str, Any] = {}

    def run_blocked() -> None:
        out["r"] = client.agents.messages.create(blocked, "/call block_until_released {}")

    th = threading.Thread(target=run_blocked)
    th.start()
    try:
        assert _SHARED["started"].wait(10)
        assert client.runtime.locks.is_locked(blocked.id)
        # While one agent's turn sits in a tool, another agent completes whole turns.
        for text in ("hello", "My name is Bo.", "What is my name?"):
            r = client.agents.messages.create(free, text)
            assert r.stop_reason == "end_turn"
        assert "Name: Bo" in r.text
        assert th.is_alive() and blocked.id in client.runtime.running
        assert not client.runtime.locks.is_locked(free.id)
        assert len(client.runtime.locks) == 1
    finally:
        _SHARED["release"].set()
        th.join(30)
    assert tool_messages(out["r"].messages)[0].content == "released"
    assert_consistent(client, blocked.id)
    assert_consistent(client, free.id)
    assert len(client.runtime.locks) == 0


# ---- streaming ------------------------------------------------------------------------------------------


def _summarise_events(events: list[Any]) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, (ReasoningDelta, AssistantDelta)):
            out.append((type(e).__name__, e.text))
        elif isinstance(e, ToolCallEvent):
            out.append(("ToolCallEvent", e.name, e.arguments))
        elif isinstance(e, ToolReturnEvent):
            out.append(("ToolReturnEvent", e.name, e.status, e.content))
        elif isinstance(e, StepEvent):
            out.append(("StepEvent", e.step.step_index, e.step.tool_names, e.step.stop_reason))
        elif isinstance(e, StopEvent):
            out.append(("StopEvent", e.stop_reason))
        else:  # pragma: no cover
            out.append((type(e).__name__,))
    return out


def _check_stream(client: letta_nb.Client, agent: letta_nb.AgentState, events: list[Any]) -> None:
    assert isinstance(events[-1], StopEvent) and events[-1].stop_reason == "end_turn"
    assert sum(isinstance(e, StopEvent) for e in events) == 1
    recall = assert_consistent(client, agent.id)
    reply = [m for m in recall if m.message_type == "assistant_message"][-1]
    assert "".join(e.text for e in events if isinstance(e, AssistantDelta)) == reply.text
    assert sum(isinstance(e, AssistantDelta) for e in events) > 1  # streamed in pieces
    # Reasoning deltas are the assistant messages' content, step by step.
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "".join(
        m.content or "" for m in recall if m.role == "assistant")
    [tc] = [e for e in events if isinstance(e, ToolCallEvent)]
    assert tc.name == "core_memory_append" and json.loads(tc.arguments)["label"] == "human"
    [tr] = [e for e in events if isinstance(e, ToolReturnEvent)]
    assert (tr.call_id, tr.status) == (tc.call_id, "success")
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [s.step.stop_reason for s in steps] == [None, "end_turn"]
    stored_steps = on_loop(client, client.runtime.store.step_rows(agent.id))
    assert [s.step.id for s in steps] == [s.id for s in stored_steps]
    assert events.index(tr) < events.index(steps[0]) < events.index(
        next(e for e in events if isinstance(e, AssistantDelta)))
    assert client.agents.blocks.retrieve(agent, "human").value == "Name: Ada"


def test_stream_yields_deltas_tool_events_steps_and_stop(client: letta_nb.Client) -> None:
    agent = client.agents.create("streamer")
    events = list(client.agents.messages.stream(agent, "My name is Ada."))
    _check_stream(client, agent, events)


def test_astream_matches_stream(client: letta_nb.Client) -> None:
    sync_agent = client.agents.create("s1")
    async_agent = client.agents.create("s2")
    sync_events = list(client.agents.messages.stream(sync_agent, "My name is Ada."))

    async def collect() -> list[Any]:
        return [e async for e in client.agents.messages.astream(async_agent, "My name is Ada.")]

    async_events = asyncio.run(collect())
    _check_stream(client, async_agent, async_events)
    assert _summarise_events(async_events) == _summarise_events(sync_events)


def test_stream_errors_surface_to_the_consumer(client: letta_nb.Client) -> None:
    agent = client.agents.create("small", model=SMALL)
    with pytest.raises(InvalidArgumentError):
        list(client.agents.messages.stream(agent, "word " * 1000))
    with pytest.raises(letta_nb.AgentNotFoundError):
        list(client.agents.messages.stream("no-such-agent", "hi"))
    assert client.agents.messages.list(agent) == []


# ---- cancellation ---------------------------------------------------------------------------------------


def test_cancel_a_running_create(client: letta_nb.Client) -> None:
    agent = client.agents.create("slow", model=SLOW)
    assert client.agents.messages.cancel(agent) is False  # nothing running yet
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["r"] = client.agents.messages.create(agent, "hello there")
        except BaseException as e:
            out["e"] = e

    th = threading.Thread(target=run)
    th.start()
    wait_until(lambda: agent.id in client.runtime.running, "the turn to start")
    assert client.agents.messages.cancel(agent) is True
    th.join(30)
    assert not th.is_alive()
    assert "r" not in out
    assert isinstance(out["e"], (concurrent.futures.CancelledError, asyncio.CancelledError))

    recall = assert_consistent(client, agent.id)
    assert recall[0].role == "user" and recall[0].content == "hello there"
    assert all(m.role in ("user", "assistant") for m in recall)  # no half-done tool call
    steps = on_loop(client, client.runtime.store.step_rows(agent.id))
    assert steps[-1].stop_reason == "cancelled"

    r = client.agents.messages.create(agent, call("send_message", message="back again"))
    assert r.stop_reason == "end_turn" and r.text == "back again"
    assert_consistent(client, agent.id)


def test_cancel_mid_reply_keeps_the_streamed_part(client: letta_nb.Client) -> None:
    agent = client.agents.create("slow", model=SLOW)
    events: list[Any] = []
    cancelled = False
    for event in client.agents.messages.stream(agent, "hello there"):
        events.append(event)
        if isinstance(event, AssistantDelta) and not cancelled:
            assert client.agents.messages.cancel(agent) is True
            cancelled = True
    assert isinstance(events[-1], StopEvent) and events[-1].stop_reason == "cancelled"
    streamed = "".join(e.text for e in events if isinstance(e, AssistantDelta))
    assert streamed

    recall = assert_consistent(client, agent.id)
    assert [m.role for m in recall] == ["user", "assistant"]
    partial = recall[1]
    assert partial.content == streamed and partial.status == "cancelled" and not partial.tool_calls
    steps = on_loop(client, client.runtime.store.step_rows(agent.id))
    assert [s.stop_reason for s in steps] == ["cancelled"]


def test_breaking_out_of_a_stream_cancels_the_turn(client: letta_nb.Client) -> None:
    agent = client.agents.create("slow", model=SLOW)
    for event in client.agents.messages.stream(agent, "hello there"):
        if isinstance(event, ReasoningDelta):
            break
    # The turn is over once the loop is left: no task, no lock, the store consistent.
    assert client.runtime.running == {}
    recall = assert_consistent(client, agent.id)
    assert recall[0].content == "hello there"
    assert on_loop(client, client.runtime.store.step_rows(agent.id))[-1].stop_reason == "cancelled"

    r = client.agents.messages.create(agent, call("send_message", message="after the break"))
    assert r.text == "after the break"
    msgs = assert_consistent(client, agent.id)
    assert [m.role for m in msgs if m.role == "user"] == ["user", "user"]
