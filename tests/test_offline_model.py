"""The offline model: deterministic decisions and well-formed streams (its spec, latency and answering modes:
tests/test_offline_model_modes.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from letta_nb.llm.base import Completion, LLMClient, TextDelta, ToolCallDelta, complete
from letta_nb.llm.offline import _ARG_CHUNK, OfflineModel


def system_prompt(blocks: dict[str, str], limits: dict[str, int] | None = None) -> str:
    """A system prompt with core memory rendered the way the runtime renders it."""
    parts = []
    for label, value in blocks.items():
        limit = (limits or {}).get(label, 5000)
        parts.append(
            f"<{label}>\n<description>\nThe {label} block: things to know.\n</description>\n"
            f"<metadata>\n- chars_current={len(value)}\n- chars_limit={limit}\n</metadata>\n"
            f"<value>\n{value}\n</value>\n</{label}>"
        )
    return (
        "You are a helpful agent.\n\n<memory_blocks>\n"
        "The following memory blocks are currently engaged in your core memory unit:\n\n"
        + "\n\n".join(parts)
        + "\n</memory_blocks>"
    )


def tool(name: str, *params: str) -> dict[str, Any]:
    props = {p: {"type": "string"} for p in params}
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": props}}}


BASE_TOOLS = [
    tool("send_message", "message"),
    tool("conversation_search", "query"),
    tool("archival_memory_insert", "content"),
    tool("archival_memory_search", "query"),
    tool("core_memory_append", "label", "content"),
    tool("core_memory_replace", "label", "old_content", "new_content"),
]
DEFAULT_BLOCKS = {"persona": "I am a concise research assistant.", "human": "Name: Ada"}


def convo(*turns: dict[str, Any], blocks: dict[str, str] | None = None, limits: dict[str, int] | None = None):
    return [{"role": "system", "content": system_prompt(DEFAULT_BLOCKS if blocks is None else blocks, limits)}, *turns]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant_call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    fn = {"name": name, "arguments": json.dumps(args)}
    return {
        "role": "assistant",
        "content": "thinking",
        "tool_calls": [{"id": call_id, "type": "function", "function": fn}],
    }


def tool_result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def run(messages, tools=BASE_TOOLS, model: OfflineModel | None = None) -> list:
    async def go():
        return [e async for e in (model or OfflineModel()).stream(messages, tools)]

    return asyncio.run(go())


def final(messages, tools=BASE_TOOLS, model: OfflineModel | None = None) -> Completion:
    events = run(messages, tools, model)
    assert isinstance(events[-1], Completion)
    assert not any(isinstance(e, Completion) for e in events[:-1])
    return events[-1]


def only_call(c: Completion) -> tuple[str, dict[str, Any]]:
    assert len(c.tool_calls) == 1, c
    return c.tool_calls[0].name, c.tool_calls[0].parsed_arguments()


def test_implements_protocol():
    model = OfflineModel()
    assert isinstance(model, LLMClient)
    assert model.name == "offline" and model.context_window == 16384 and OfflineModel.supports_parallel_tool_calls


def test_same_input_gives_identical_events():
    msgs = convo(user("My name is Grace Hopper."))
    first, second = run(msgs), run(msgs)
    strip = [e for e in first if not isinstance(e, Completion)]
    assert strip == [e for e in second if not isinstance(e, Completion)]
    a, b = first[-1], second[-1]
    assert (a.content, a.tool_calls, a.usage, a.finish_reason) == (b.content, b.tool_calls, b.usage, b.finish_reason)
    assert a.tool_calls[0].id.startswith("call_") and len(a.tool_calls[0].id) == 21


def test_stated_name_goes_to_human_block():
    c = final(convo(user("Hi, my name is Grace Hopper.")))
    assert only_call(c) == ("core_memory_append", {"label": "human", "content": "Name: Grace Hopper"})
    assert c.finish_reason == "tool_calls"
    assert "core memory" in c.content


def test_stated_fact_goes_to_human_block():
    c = final(convo(user("I work at the Analytical Engine lab.")))
    assert only_call(c) == (
        "core_memory_append",
        {"label": "human", "content": "User: I work at the Analytical Engine lab"},
    )


def test_fact_over_block_limit_goes_to_archival():
    msgs = convo(user("I like long walks on the beach."), limits={"human": 20})
    assert only_call(final(msgs)) == ("archival_memory_insert", {"content": "User: I like long walks on the beach"})


def test_fact_with_read_only_human_block_goes_to_archival():
    msgs = convo(user("I like tea."))
    msgs[0]["content"] = msgs[0]["content"].replace(
        "- chars_limit=5000\n</metadata>\n<value>\nName",
        "- chars_limit=5000\n- read_only=true\n</metadata>\n<value>\nName",
    )
    assert "read_only=true" in msgs[0]["content"]
    assert only_call(final(msgs))[0] == "archival_memory_insert"


def test_fact_without_human_block_goes_to_archival():
    msgs = convo(user("I like tea."), blocks={"persona": "I am terse."})
    assert only_call(final(msgs))[0] == "archival_memory_insert"


@pytest.mark.parametrize(
    "text",
    ["Remember that the launch code is 1234.", "note that the launch code is 1234", "fact: the launch code is 1234"],
)
def test_remember_goes_to_archival(text):
    assert only_call(final(convo(user(text)))) == ("archival_memory_insert", {"content": "the launch code is 1234"})


def test_question_answered_from_core_memory():
    c = final(convo(user("What is my name?")))
    assert only_call(c) == ("send_message", {"message": 'From my core memory: "Name: Ada".'})


def test_question_ignores_persona_block():
    msgs = convo(user("Who is the research assistant?"))
    assert only_call(final(msgs)) == ("archival_memory_search", {"query": "Who is the research assistant"})


def test_question_not_in_core_searches_archival():
    c = final(convo(user("Where did I park the car?")))
    assert only_call(c) == ("archival_memory_search", {"query": "Where did I park the car"})


def test_question_without_archival_searches_conversation():
    tools = [t for t in BASE_TOOLS if t["function"]["name"] != "archival_memory_search"]
    assert only_call(final(convo(user("where did I park the car?")), tools))[0] == "conversation_search"


def test_archival_results_are_quoted():
    results = json.dumps([{"text": "The car is parked on level 3.", "score": 0.9}, {"text": "other"}])
    msgs = convo(
        user("Where did I park the car?"),
        assistant_call("c1", "archival_memory_search", query="Where did I park the car"),
        tool_result("c1", results),
    )
    assert only_call(final(msgs)) == (
        "send_message",
        {"message": 'From my archival memory: "The car is parked on level 3."'},
    )


def test_empty_archival_then_conversation_then_dont_know():
    q = "Where did I park the car"
    msgs = convo(user(q + "?"), assistant_call("c1", "archival_memory_search", query=q), tool_result("c1", "[]"))
    assert only_call(final(msgs)) == ("conversation_search", {"query": q})
    # The conversation only holds the question itself, which must not count as an answer.
    msgs += [
        assistant_call("c2", "conversation_search", query=q),
        tool_result("c2", json.dumps([{"role": "user", "content": q + "?"}])),
    ]
    name, args = only_call(final(msgs))
    assert name == "send_message"
    assert "don't know" in args["message"] and "offline model" in args["message"] and q in args["message"]


def test_conversation_results_pick_best_match():
    q = "Where did I park the car"
    found = json.dumps(
        [{"role": "user", "content": "I had pasta"}, {"role": "user", "content": "I parked the car on level 3"}]
    )
    msgs = convo(user(q + "?"), assistant_call("c1", "conversation_search", query=q), tool_result("c1", found))
    assert only_call(final(msgs)) == ("send_message", {"message": 'You told me earlier: "I parked the car on level 3"'})


def test_core_write_success_is_confirmed():
    msgs = convo(
        user("My name is Ada."),
        assistant_call("c1", "core_memory_append", label="human", content="Name: Ada"),
        tool_result("c1", "None"),
    )
    msg = only_call(final(msgs))[1]["message"]
    assert msg == 'Got it - I saved "Name: Ada" to my core memory (human).'


def test_core_write_error_retries_in_archival_then_explains():
    msgs = convo(
        user("I like tea."),
        assistant_call("c1", "core_memory_append", label="human", content="User: I like tea"),
        tool_result("c1", "Error: block 'human' would exceed its character limit of 20"),
    )
    assert only_call(final(msgs)) == ("archival_memory_insert", {"content": "User: I like tea"})
    msgs += [
        assistant_call("c2", "archival_memory_insert", content="User: I like tea"),
        tool_result("c2", "Error: store is read-only"),
    ]
    name, args = only_call(final(msgs))
    assert name == "send_message" and "couldn't save" in args["message"] and "read-only" in args["message"]


@pytest.mark.parametrize(
    "error",
    [
        "Error: block 'human' is full",
        "BlockLimitError: Edit failed: block 'human' would hold 30 characters",
        "over the limit",
    ],
)
def test_core_write_error_shapes_trigger_retry(error):
    msgs = convo(
        user("I like tea."),
        assistant_call("c1", "core_memory_append", label="human", content="User: I like tea"),
        tool_result("c1", error),
    )
    assert only_call(final(msgs))[0] == "archival_memory_insert"


def test_other_tool_result_is_reported():
    msgs = convo(user("/call roll_dice {}"), assistant_call("c1", "roll_dice"), tool_result("c1", "4"))
    assert only_call(final(msgs)) == ("send_message", {"message": "The tool roll_dice returned: 4"})
    msgs[-1] = tool_result("c1", "Error: dice fell off the table")
    assert only_call(final(msgs))[1]["message"].startswith("The tool roll_dice failed: Error")
    msgs[-1] = tool_result("c1", "InvalidArgumentError: sides must be positive")  # the executor's error shape
    assert only_call(final(msgs))[1]["message"].startswith("The tool roll_dice failed: InvalidArgumentError")
    msgs[-1] = tool_result("c1", "Errors are rare; rolled 6")
    assert only_call(final(msgs))[1]["message"].startswith("The tool roll_dice returned:")


def test_slash_call_is_verbatim_and_multiple():
    c = final(
        convo(user('/call core_memory_append {"label": "human", "content": "x"\n/call send_message {"message": "hi"}'))
    )
    assert [(t.name, t.arguments) for t in c.tool_calls] == [
        ("core_memory_append", '{"label": "human", "content": "x"'),
        ("send_message", '{"message": "hi"}'),
    ]
    assert len({t.id for t in c.tool_calls}) == 2


def test_no_send_message_tool_gives_plain_content():
    tools = [t for t in BASE_TOOLS if t["function"]["name"] != "send_message"]
    c = final(convo(user("What is my name?")), tools)
    assert c.tool_calls == () and c.finish_reason == "stop"
    assert c.content == 'From my core memory: "Name: Ada".'


def test_greeting_first_then_acknowledgement():
    first = only_call(final(convo(user("Hello!"))))[1]["message"]
    assert "offline model" in first and "API key" in first
    later = convo(user("Hello!"), {"role": "assistant", "content": "hi"}, user("Nice weather today"))
    msg = only_call(final(later))[1]["message"]
    assert '"Nice weather today"' in msg and "offline model" in msg


@pytest.mark.parametrize(
    "messages",
    [
        convo(user("My name is Ada Lovelace, and I like étoiles.")),
        convo(
            user('/call send_message {"message": "ünïcödé and a long text to chunk"}\n/call archival_memory_search {}')
        ),
        convo(
            user("Where did I park?"),
            assistant_call("c1", "archival_memory_search", query="x"),
            tool_result("c1", "[]"),
        ),
    ],
)
def test_deltas_reassemble_into_completion(messages):
    events = run(messages)
    done = events[-1]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == done.content
    calls: dict[int, dict[str, str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.index not in calls:
                assert e.id and e.name, "first delta of a call carries id and name"
                calls[e.index] = {"id": e.id, "name": e.name, "arguments": ""}
            else:
                assert e.id is None and e.name is None and 0 < len(e.arguments) <= _ARG_CHUNK
            calls[e.index]["arguments"] += e.arguments
    assert [(c["id"], c["name"], c["arguments"]) for c in calls.values()] == [
        (t.id, t.name, t.arguments) for t in done.tool_calls
    ]
    first_call = next(i for i, e in enumerate(events) if isinstance(e, ToolCallDelta))
    assert all(isinstance(e, TextDelta) for e in events[:first_call])
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0


def test_complete_helper_and_ascii():
    c = asyncio.run(complete(OfflineModel(), convo(user("My name is Zoë")), BASE_TOOLS))
    assert "Zoë" in c.tool_calls[0].arguments


def test_loop_guard_stops_repeated_calls():
    q = "Where did I park the car"
    msgs = convo(user(q + "?"))
    for i in range(3):
        msgs += [assistant_call(f"s{i}", "conversation_search", query=q), tool_result(f"s{i}", "[]")]
    msgs += [assistant_call("a", "archival_memory_search", query=q), tool_result("a", "[]")]
    name, args = only_call(final(msgs))
    assert name == "send_message" and "conversation_search" in args["message"] and "3 times" in args["message"]
    # A new user message starts a new turn: the guard resets.
    msgs += [assistant_call("m", "send_message", message="..."), tool_result("m", "None"), user(q + "?")]
    assert only_call(final(msgs))[0] == "archival_memory_search"


def test_heartbeat_schema_gets_request_heartbeat():
    tools = [tool("send_message", "message"), tool("core_memory_append", "label", "content", "request_heartbeat")]
    args = only_call(final(convo(user("I live in London")), tools))[1]
    assert args["request_heartbeat"] is True
