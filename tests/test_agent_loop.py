"""The agent loop end to end: memory, base tools, steps, the context budget (user tools: test_user_tools.py).

Every test drives a real runtime over a real SQLite file (``letta_nb.connect(tmp_path / "s.db")``) with the
deterministic offline model, and checks what a user can observe: the Response, recall memory
(``messages.list``), the blocks API, stream events and, where it matters, the rows in the store. The
offline model's ``/call TOOL {json}`` lines make it call exactly that tool with exactly those (possibly
malformed) arguments, and after a tool result it answers with ``send_message``.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    add,
    assert_consistent,
    call,
    on_loop,
    record_prompts,
    tool_messages,
)
from tests.store_query import query

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


@pytest.fixture(params=["memgpt_agent", "letta_v1_agent"])
def mem_agent(client: letta_nb.Client, request: pytest.FixtureRequest) -> letta_nb.AgentState:
    """Both of Letta's agent types: the memory tools behave the same whether the reply goes through
    send_message or is the model's content (runtime/replies.py)."""
    return client.agents.create("mem", memory_blocks=MEMORY, agent_type=request.param)


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
    [(start, summary)] = query(client.runtime.store.location.sqlite_path or client.runtime.store.location.url,
                             "SELECT context_start_seq, context_summary FROM agents WHERE id = ?", agent.id)
    assert (start, summary) == (state.context_start_seq, state.context_summary)

    session = on_loop(client, client.runtime.session(agent.id))
    assert session.messages[0].role == "user" and session.messages[0].seq == state.context_start_seq
    assert len(session.messages) < len(recall)
    # Loaded again from the store (one read transaction: the agent row, then its context's messages), the
    # session is the one the turns built in memory.
    client.runtime.invalidate_agent(agent.id)
    reloaded = on_loop(client, client.runtime.session(agent.id))
    assert reloaded is not session and [m.id for m in reloaded.messages] == [m.id for m in session.messages]
    assert reloaded.agent.context_start_seq == state.context_start_seq
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
