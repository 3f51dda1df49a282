"""The offline model's spec (``offline?latency_ms=...&tps=...``), its simulated latency and token pacing, and its
answering modes (``reply=``, ``calls=``, ``reasoning=``); its decisions: tests/test_offline_model.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_offline_model import convo, final, only_call, run, user

from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.base import ReasoningTextDelta, TextDelta, ToolCallDelta
from letta_nb.llm.offline import OfflineModel


def test_from_spec():
    assert OfflineModel.from_spec("offline").spec == "offline"
    m = OfflineModel.from_spec("offline?latency_ms=50&tps=200")
    assert (m.latency_ms, m.tps, m.context_window) == (50.0, 200.0, 16384)
    assert OfflineModel.from_spec("offline?context_window=4096").context_window == 4096
    assert OfflineModel.from_spec(m.spec).spec == m.spec == "offline?latency_ms=50&tps=200"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("offline?latency=5", "latency_ms, tps, context_window"),
        ("offline?tps=fast", "tps"),
        ("offline?latency_ms=-1", "latency_ms"),
        ("offline?context_window=0", "context_window"),
        ("offline?context_window=1.5", "context_window"),
        ("offline?tps=0", "tps"),
        ("offline?latency_ms=nan", "latency_ms"),
        ("gpt-4o", "offline"),
    ],
)
def test_from_spec_errors(spec, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        OfflineModel.from_spec(spec)


def test_constructor_rejects_negative():
    with pytest.raises(InvalidArgumentError):
        OfflineModel(latency_ms=-5)


def test_latency_delays_first_event():
    c = final(convo(user("hello")), model=OfflineModel(latency_ms=30))
    assert c.ttft_ms >= 30


def test_tps_paces_tokens_in_batches(monkeypatch):
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay, *args):
        sleeps.append(delay)
        await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    t0 = time.perf_counter()
    c = final(convo(user("My name is Ada Lovelace")), model=OfflineModel(tps=1000))
    elapsed = time.perf_counter() - t0
    assert sleeps and all(s >= 0.005 for s in sleeps[:-1])
    assert elapsed >= c.usage.completion_tokens / 1000 * 0.5


def test_zero_latency_never_sleeps(monkeypatch):
    calls: list[float] = []

    async def recording_sleep(delay, *args):
        calls.append(delay)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    for msgs in (convo(user("hello")), convo(user("My name is Ada")), convo(user("Where is it?"))):
        final(msgs)
    assert calls == []


# ---- answering modes (offline?reply=...&calls=...&reasoning=...) -------------------------------------------


def test_default_mode_is_reasoning_content_then_api_calls():
    c = final(convo(user("My name is Ada.")))
    assert c.content.startswith("The user told me their name") and c.reasoning is None
    assert only_call(c)[0] == "core_memory_append" and not c.tool_calls[0].recovered


def test_reply_content_answers_in_plain_content_even_with_send_message_offered():
    model = OfflineModel.from_spec("offline?reply=content")
    c = final(convo(user("What is my name?")), model=model)
    assert c.tool_calls == () and "Ada" in c.content and c.finish_reason == "stop"
    assert only_call(final(convo(user("What is my name?"))))[0] == "send_message"  # the default calls it


@pytest.mark.parametrize(("style", "head", "tail"), [
    ("json", '{"name": "core_memory_append"', '"Name: Grace"}}'),
    ("fenced", '```json\n{"name": "core_memory_append"', "}}\n```"),
    ("tagged", '<tool_call>\n{"name": "core_memory_append"', "}}\n</tool_call>"),
])
def test_calls_written_as_text(style, head, tail):
    model = OfflineModel.from_spec(f"offline?calls={style}")
    events = run(convo(user("My name is Grace.")), model=model)
    c = events[-1]
    assert c.tool_calls == () and c.content.startswith(head) and c.content.endswith(tail)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == c.content
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    # several calls in one step cannot be one JSON text: they stay API calls
    two = final(convo(user('/call archival_memory_search {"query": "a"}\n/call conversation_search {"query": "b"}')),
                model=model)
    assert [t.name for t in two.tool_calls] == ["archival_memory_search", "conversation_search"]


def test_reasoning_field_streams_reasoning_deltas_apart_from_the_content():
    model = OfflineModel.from_spec("offline?reasoning=field")
    events = run(convo(user("My name is Ada.")), model=model)
    thought = "".join(e.text for e in events if isinstance(e, ReasoningTextDelta))
    c = events[-1]
    assert thought.startswith("The user told me their name") and c.reasoning == thought
    assert c.content is None and only_call(c)[0] == "core_memory_append"
    quiet = final(convo(user("My name is Ada.")), model=OfflineModel.from_spec("offline?reasoning=none"))
    assert quiet.content is None and quiet.reasoning is None and quiet.tool_calls


def test_mode_options_round_trip_and_bad_values_name_the_choices():
    spec = "offline?reply=content&calls=tagged&reasoning=field"
    assert OfflineModel.from_spec(spec).spec == spec and OfflineModel.from_spec("offline").spec == "offline"
    with pytest.raises(InvalidArgumentError, match="'calls'.*expected one of 'api', 'json', 'fenced', 'tagged'"):
        OfflineModel.from_spec("offline?calls=xml")
    with pytest.raises(InvalidArgumentError, match="reply='loud' is invalid: expected one of 'auto', 'content'"):
        OfflineModel(reply="loud")
