"""The agent loop end to end: memory, base tools, user tools, steps, the context budget.

Every test drives a real runtime over a real SQLite file (``letta_nb.connect(tmp_path / "s.db")``) with the
deterministic offline model, and checks what a user can observe: the Response, recall memory
(``messages.list``), the blocks API, stream events and, where it matters, the rows in the store. The
offline model's ``/call TOOL {json}`` lines make it call exactly that tool with exactly those (possibly
malformed) arguments, and after a tool result it answers with ``send_message``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.tokens import message_tokens, tools_tokens
from letta_nb.runtime.events import (
    StopEvent,
)
from tests.agent_helpers import (
    SMALL,
    RecordingModel,
    assert_consistent,
    call,
    on_loop,
    record_prompts,
    tool_messages,
)
from tests.store_query import query

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
    [(start, summary)] = query(client.runtime.store.location.sqlite_path,
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
