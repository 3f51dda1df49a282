"""Letta's two agent types, replies in plain content, reasoning fields and tool calls written as JSON text.

``memgpt_agent`` replies through send_message; ``letta_v1_agent`` replies in its content and a step without
tool calls ends its turn. Whatever the type, a reply in plain content streams as the reply (AssistantDelta
pieces, before the step ends), reasoning never does, and a content that is exactly a call of an offered
tool runs as that call, flagged ``recovered`` in the stream and in recall memory. All of it with the
offline model's modes and the loopback server: no key.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import letta_nb
from letta_nb.llm.text_calls import could_be_call, parse_text_call
from letta_nb.runtime.events import AssistantDelta, ReasoningDelta, StepEvent, StopEvent, ToolCallEvent
from letta_nb.testing.loopback import LoopbackServer
from tests.agent_helpers import assert_consistent

AGENT_TYPES = ["memgpt_agent", "letta_v1_agent"]
HELLO = "Hello! I'm letta_nb's offline model"


def stream(client: letta_nb.Client, agent: str, text: str) -> list[Any]:
    return list(client.agents.messages.stream(agent, text))


def replies(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, AssistantDelta)]


def thoughts(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def streamed_before_the_step_ended(events: list[Any]) -> bool:
    first_reply = next(i for i, e in enumerate(events) if isinstance(e, AssistantDelta))
    last_step = max(i for i, e in enumerate(events) if isinstance(e, StepEvent))
    return first_reply < last_step


# ---- both agent types run the agent loop ------------------------------------------------------------------


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_both_types_store_a_fact_answer_from_memory_and_stream_the_reply(client: letta_nb.Client,
                                                                          agent_type: str) -> None:
    agent = client.agents.create("sam", agent_type=agent_type)
    assert ("send_message" in agent.tools) == (agent_type == "memgpt_agent")  # v1 replies in its content
    assert ("with send_message" in agent.system) == (agent_type == "memgpt_agent")
    r = client.agents.messages.create("sam", "My name is Ada.")
    assert r.text == 'Got it - I saved "Name: Ada" to my core memory (human).'
    assert client.agents.blocks.retrieve("sam", "human").value == "Name: Ada"
    expected = ["core_memory_append", "send_message"] if agent_type == "memgpt_agent" else ["core_memory_append"]
    assert [name for s in r.steps for name in s.tool_names] == expected
    assert len(r.steps) == 2 and r.stop_reason == "end_turn"

    events = stream(client, "sam", "What is my name?")
    text = "".join(replies(events))
    assert "Ada" in text and len(replies(events)) > 1  # token by token, not one block at the end
    assert streamed_before_the_step_ended(events)
    assert "Ada" not in thoughts(events)  # the reply never streams as reasoning
    assert isinstance(events[-1], StopEvent) and events[-1].stop_reason == "end_turn"
    last = [m for m in client.agents.messages.list("sam") if m.message_type == "assistant_message"][-1]
    assert last.text == text
    assert_consistent(client, "sam")


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_a_step_without_tool_calls_ends_the_turn(client: letta_nb.Client, agent_type: str) -> None:
    client.agents.create("sam", agent_type=agent_type, model="offline?reply=content")
    r = client.agents.messages.create("sam", "Hi!")
    assert len(r.steps) == 1 and r.steps[0].tool_names == () and r.stop_reason == "end_turn"
    assert r.text.startswith(HELLO)
    assert [m.message_type for m in r.messages] == ["user_message", "assistant_message"]


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_user_tools_and_max_steps_hold_for_both_types(client: letta_nb.Client, agent_type: str) -> None:
    from tests.agent_helpers import add, call

    client.agents.create("sam", agent_type=agent_type, tools=[add], max_steps=1)
    r = client.agents.messages.create("sam", call("add", a=2, b=3))
    assert r.stop_reason == "max_steps" and [s.tool_names for s in r.steps] == [("add",)]
    assert [m.content for m in r.messages if m.role == "tool"] == ["5"]


# ---- the live bug: plain content is the reply, live ----------------------------------------------------------


def test_memgpt_agent_without_base_tools_streams_its_plain_content_reply_live(client: letta_nb.Client) -> None:
    client.agents.create("bare", include_base_tools=False)  # the reported repro: no send_message to call
    events = stream(client, "bare", "Hi!")
    pieces = replies(events)
    assert "".join(pieces).startswith(HELLO) and len(pieces) > 3
    assert streamed_before_the_step_ended(events)
    assert thoughts(events) == ""
    assert client.agents.messages.list("bare")[-1].text == "".join(pieces)


def test_memgpt_agent_whose_model_ignores_send_message_still_shows_the_reply(client: letta_nb.Client) -> None:
    # send_message is offered, so content is inner thoughts until the step ends without a call: then it
    # is the reply, given whole as one AssistantDelta
    client.agents.create("sam", model="offline?reply=content")
    events = stream(client, "sam", "Hi!")
    assert len(replies(events)) == 1 and replies(events)[0].startswith(HELLO)
    r = client.agents.messages.create("sam", "What is my name?")
    assert r.text and r.stop_reason == "end_turn"


def test_v1_agent_content_beside_a_tool_call_is_part_of_the_reply(client: letta_nb.Client) -> None:
    client.agents.create("v1", agent_type="letta_v1_agent")
    events = stream(client, "v1", "My name is Ada.")
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("AssistantDelta") < kinds.index("ToolCallEvent")  # what it said before the call
    assert "saving" in "".join(replies(events)).lower() or "store" in "".join(replies(events)).lower()


def test_cancel_mid_content_reply_keeps_the_streamed_part(client: letta_nb.Client) -> None:
    client.agents.create("slow", agent_type="letta_v1_agent", model="offline?tps=40")
    shown = ""
    with contextlib.closing(client.agents.messages.stream("slow", "Hi!")) as events:
        for e in events:
            if isinstance(e, AssistantDelta):
                shown += e.text
                if len(shown) > 20:
                    break  # closing the stream cancels the turn
    kept = client.agents.messages.list("slow")[-1]
    assert kept.status == "cancelled" and kept.text.startswith(shown) and len(kept.text) < 150


# ---- reasoning fields ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_reasoning_field_streams_as_reasoning_never_as_the_reply(client: letta_nb.Client, agent_type: str) -> None:
    client.agents.create("think", agent_type=agent_type, model="offline?reasoning=field")
    events = stream(client, "think", "My name is Ada.")
    assert "The user told me their name" in thoughts(events)
    assert "The user told me" not in "".join(replies(events))
    assert "".join(replies(events)) == 'Got it - I saved "Name: Ada" to my core memory (human).'


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_over_http_become_reasoning_events(client: letta_nb.Client, field: str) -> None:
    with LoopbackServer(reasoning_field=field) as srv:
        client.agents.create("wire", agent_type="letta_v1_agent", model=f"openai/m?base_url={srv.base_url}")
        srv.reply("The answer is 42.", reasoning="Six times seven.")
        events = stream(client, "wire", "What is the answer?")
    assert thoughts(events) == "Six times seven."
    assert "".join(replies(events)) == "The answer is 42."


# ---- tool calls written as JSON text -------------------------------------------------------------------------

OFFERED = {"send_message", "core_memory_append"}
CALL = '{"name": "core_memory_append", "arguments": {"label": "human", "content": "Name: Ada"}}'


@pytest.mark.parametrize("text", [
    CALL,
    f"  {CALL}\n",
    f"```json\n{CALL}\n```",
    f"```\n{CALL}\n```",
    f"<tool_call>\n{CALL}\n</tool_call>",
    '{"name": "core_memory_append", "parameters": {"label": "human", "content": "Name: Ada"}}',
    '{"type": "function", "name": "core_memory_append", "arguments": "{\\"label\\": \\"human\\", '
    '\\"content\\": \\"Name: Ada\\"}"}',
], ids=["bare", "spaces", "fenced-json", "fenced", "tagged", "parameters", "arguments-as-text"])
def test_a_content_that_is_exactly_a_call_is_recognised(text: str) -> None:
    assert parse_text_call(text, OFFERED) == ("core_memory_append", '{"label": "human", "content": "Name: Ada"}')
    assert could_be_call(text[:1]) is not False


@pytest.mark.parametrize("text", [
    f"Sure! {CALL}",  # text around it
    f"{CALL} Done.",
    f"```python\n{CALL}\n```",
    '{"name": "web_search", "arguments": {"query": "x"}}',  # a tool not offered
    '{"name": "core_memory_append", "arguments": {"label": "human"}, "extra": 1}',  # other keys
    '{"name": "core_memory_append"}',  # no arguments
    '{"name": "core_memory_append", "arguments": [1, 2]}',
    '{"name": "core_memory_append", "arguments": {"label": "human"',  # cut short
    '[{"name": "core_memory_append", "arguments": {}}]',
    "The JSON shape is {name, arguments}.",
], ids=["text-before", "text-after", "python-fence", "not-offered", "extra-key", "no-arguments", "list-arguments",
        "truncated", "a-list", "prose"])
def test_near_misses_stay_text(text: str) -> None:
    assert parse_text_call(text, OFFERED) is None


def test_streaming_holds_only_what_may_be_a_call() -> None:
    assert could_be_call("") is None and could_be_call("  `") is None and could_be_call("<tool") is None
    assert could_be_call("Hello") is False and could_be_call("<b>") is False
    assert could_be_call("```python\n") is False and could_be_call("```json\n{") is True
    assert could_be_call("{") is True


@pytest.mark.parametrize("style", ["json", "fenced", "tagged"])
@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_calls_written_as_text_run_as_recovered_tool_calls(client: letta_nb.Client, style: str,
                                                            agent_type: str) -> None:
    client.agents.create("small", agent_type=agent_type, model=f"offline?calls={style}")
    events = stream(client, "small", "My name is Ada.")
    assert client.agents.blocks.retrieve("small", "human").value == "Name: Ada"  # the edit it asked for happened
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert [(c.name, c.recovered) for c in calls] == [("core_memory_append", True)]
    reply = "".join(replies(events))
    assert reply == 'Got it - I saved "Name: Ada" to my core memory (human).'  # no raw JSON shown
    assert "{" not in reply and "{" not in thoughts(events)
    stored = [c for m in client.agents.messages.list("small") for c in m.tool_calls]
    assert stored and all(c.recovered for c in stored)  # recorded in recall memory, across a reload
    assert [m for m in client.agents.messages.list("small") if m.message_type == "assistant_message"][-1].text == reply
    assert_consistent(client, "small")


def test_loopback_json_call_recovered_but_near_miss_and_unoffered_stay_text(client: letta_nb.Client) -> None:
    with LoopbackServer() as srv:
        client.agents.create("wire", model=f"openai/m?base_url={srv.base_url}", include_base_tools=False,
                             tools=["core_memory_append"])
        srv.reply(f"<tool_call>{CALL}</tool_call>")
        srv.reply("Saved.")
        r = client.agents.messages.create("wire", "My name is Ada.")
        assert client.agents.blocks.retrieve("wire", "human").value == "Name: Ada"
        assert r.messages[1].tool_calls[0].recovered and r.text == "Saved."
        for text in (f"Here you go: {CALL}", '{"name": "web_search", "arguments": {"query": "x"}}'):
            srv.reply(text)
            events = stream(client, "wire", "Again.")
            assert "".join(replies(events)) == text  # shown once decided, as the reply it is
            assert not any(isinstance(e, ToolCallEvent) for e in events)
    assert client.agents.blocks.retrieve("wire", "human").value == "Name: Ada"
