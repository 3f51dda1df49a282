"""Stream parsing: the reply's words out of streamed send_message JSON whatever the chunking, provider
reasoning fields as reasoning (streamed and not), and one step's output routed into reply, reasoning and
tool calls (a call written as JSON text held back while it streams, then run as a recovered call)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from letta_nb.llm.base import Completion, ReasoningTextDelta, TextDelta, ToolCallDelta
from letta_nb.llm.openai_compat import reasoning_text
from letta_nb.llm.registry import resolve_model
from letta_nb.runtime.events import AssistantDelta, ReasoningDelta, SendMessageParser
from letta_nb.runtime.replies import StepOutput
from letta_nb.testing.loopback import LoopbackServer

MESSAGES = ['plain', 'quotes "inside" and \\ backslash', "new\nline\ttab", "unicode é ü 😀 中文", ""]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("ascii_only", [True, False])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 24, 1000])
def test_any_chunking_yields_exactly_the_message(message, ascii_only, chunk):
    args = json.dumps({"message": message, "request_heartbeat": False}, ensure_ascii=ascii_only)
    parser = SendMessageParser()
    out = "".join(parser.feed(args[i : i + chunk]) for i in range(0, len(args), chunk))
    assert out == message


def test_other_shapes_yield_nothing():
    parser = SendMessageParser()
    assert parser.feed('{"content": "x", "message": 5}') == ""


# ---- reasoning fields and the step's output routing ------------------------------------------------------

async def _collect(model: Any) -> list[Any]:
    try:
        return [e async for e in model.stream([{"role": "user", "content": "hi"}], [])]
    finally:
        await model.aclose()


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_openai_stream_reasoning_deltas_are_reasoning_not_content(field: str) -> None:
    with LoopbackServer(reasoning_field=field) as srv:
        srv.reply("The answer is 42.", reasoning="First, six times seven. Then check it.")
        events = asyncio.run(_collect(resolve_model(f"openai/m?base_url={srv.base_url}")))
    thought = "".join(e.text for e in events if isinstance(e, ReasoningTextDelta))
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert thought == "First, six times seven. Then check it." and content == "The answer is 42."
    assert sum(isinstance(e, ReasoningTextDelta) for e in events) > 1  # streamed in pieces
    final = events[-1]
    assert isinstance(final, Completion)
    assert final.content == "The answer is 42." and final.reasoning == thought


def test_reasoning_text_reads_non_streamed_messages_and_dicts() -> None:
    import openai.types.chat as oai

    from letta_nb.testing import _api

    completion = _api.chat_completion({"messages": [{"role": "user", "content": "x"}]},
                                      _api.ScriptedReply("Reply.", reasoning="Thinking."))
    for field in ("reasoning_content", "reasoning"):
        body = _api.completion_body(completion, "m", field)
        message = oai.ChatCompletion.model_validate(body).choices[0].message
        assert reasoning_text(message) == "Thinking." and message.content == "Reply."
        assert reasoning_text(body["choices"][0]["message"]) == "Thinking."
    assert reasoning_text({"content": "x"}) == "" and reasoning_text({"reasoning": None}) == ""
    # a server sending both names sends the same text twice: it is read once
    assert reasoning_text({"reasoning_content": "a", "reasoning": "a"}) == "a"


def _route(pieces: list[str], *, content_reply: bool = True, offered: tuple[str, ...] = ("core_memory_append",)
           ) -> tuple[list[Any], Completion]:
    events: list[Any] = []
    out = StepOutput(events.append, content_reply=content_reply, offered=offered)
    for piece in pieces:
        out.feed(TextDelta(piece))
    return events, out.finish(Completion("".join(pieces)))


CALL = '{"name": "core_memory_append", "arguments": {"label": "human", "content": "Ada"}}'


@pytest.mark.parametrize("chunk", [1, 2, 7, 1000])
@pytest.mark.parametrize("text", [CALL, f"<tool_call>\n{CALL}\n</tool_call>", f"```json\n{CALL}\n```"])
def test_a_streamed_call_as_text_is_never_shown_and_becomes_a_recovered_call(text: str, chunk: int) -> None:
    events, completion = _route([text[i:i + chunk] for i in range(0, len(text), chunk)])
    assert events == []  # held back while streaming, then recognised
    (call,) = completion.tool_calls
    assert call.recovered and call.name == "core_memory_append" and completion.content is None
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_plain_content_streams_as_the_reply_at_once(chunk: int) -> None:
    text = "Hello there, Ada! Nice to meet you."
    events, completion = _route([text[i:i + chunk] for i in range(0, len(text), chunk)])
    assert all(isinstance(e, AssistantDelta) for e in events)
    assert "".join(e.text for e in events) == text and completion.content == text
    if chunk == 1:
        assert len(events) == len(text)  # every piece shown as it came, none held


def test_held_content_that_is_not_a_call_is_shown_whole_at_the_end() -> None:
    text = '{"name": "web_search", "arguments": {}}'  # not offered: the reply, as written
    events, completion = _route([text[:5], text[5:]])
    assert [type(e) for e in events] == [AssistantDelta] and events[0].text == text
    assert completion.tool_calls == () and completion.content == text


def test_inner_thoughts_before_a_call_are_reasoning_and_a_recovered_send_message_is_the_reply() -> None:
    events: list[Any] = []
    out = StepOutput(events.append, content_reply=False, offered=("send_message",))
    out.feed(TextDelta("Let me answer."))
    out.feed(ToolCallDelta(0, "c1", "send_message"))
    out.feed(ToolCallDelta(0, arguments='{"message": "Hi'))
    out.feed(ToolCallDelta(0, arguments=' Ada"}'))
    out.feed(ReasoningTextDelta("field"))
    assert events == [ReasoningDelta("Let me answer."), AssistantDelta("Hi"), AssistantDelta(" Ada"),
                      ReasoningDelta("field")]
    assert out.partial_reply() == "Hi Ada"
    events.clear()
    out = StepOutput(events.append, content_reply=False, offered=("send_message",))
    out.feed(TextDelta('{"name": "send_message", "arguments": {"message": "Hi Ada"}}'))
    completion = out.finish(Completion('{"name": "send_message", "arguments": {"message": "Hi Ada"}}'))
    assert events == [AssistantDelta("Hi Ada")] and completion.tool_calls[0].recovered
