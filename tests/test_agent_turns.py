"""Turns over time: one agent's turns in arrival order, several agents at once, streaming, cancellation.

Like test_agent_loop.py: a real runtime over a real SQLite file and the offline model (slowed down where a
turn must still be running when it is cancelled); assertions are on what a user can observe.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError, ReentrantTurnError, TurnCancelledError
from letta_nb.runtime.events import (
    AssistantDelta,
    ReasoningDelta,
    StepEvent,
    StopEvent,
    ToolCallEvent,
    ToolReturnEvent,
)
from tests.agent_helpers import (
    SLOW,
    SMALL,
    assert_consistent,
    call,
    on_loop,
    tool_messages,
    wait_until,
)

# A tool for the lock test, at module level like every test tool (its source can be stored).
_SHARED: dict[str, Any] = {}


def block_until_released() -> str:
    """Signals that it started, then waits for the test."""
    _SHARED["started"].set()
    _SHARED["release"].wait(30)
    return "released"


def message_agent(agent: str, text: str) -> str:
    """Send a message to an agent and return its reply.

    Args:
        agent: The agent's name.
        text: What to send.
    """
    return _SHARED["client"].agents.messages.create(agent, text).text


def edit_own_block(agent: str, value: str) -> str:
    """Rewrite the human block of an agent through the client.

    Args:
        agent: The agent's name.
        value: The new value.
    """
    return _SHARED["client"].agents.blocks.update(agent, "human", value=value).value


async def amessage_agent(agent: str, text: str) -> str:
    """Send a message to an agent (async) and return its reply.

    Args:
        agent: The agent's name.
        text: What to send.
    """
    return (await _SHARED["client"].agents.messages.acreate(agent, text)).text


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
    for a, b in zip(user_idx[1:-1], user_idx[2:], strict=True):
        turn = recall[a:b]
        assert [m.message_type for m in turn] == ["user_message", "assistant_message", "tool_return_message"]
        assert turn[1].text.startswith(f'Noted: "{turn[0].content}"')
    waits = [w for w in client.runtime.locks.waits if w.agent_id == agent.id]
    assert len(waits) >= 51
    assert len(client.runtime.locks) == 0


def test_thirty_concurrent_sends_by_name_are_stored_in_submission_order(client: letta_nb.Client) -> None:
    agent = client.agents.create("orderly")
    other = client.agents.create("bystander")
    client.agents.messages.create(agent.id, "hello")  # first contact gets a greeting, not an echo
    client.runtime.invalidate_agent(agent.id)  # ids must not be privileged by a warm cache either

    async def main() -> None:
        # Submitted from one thread in a well-defined order: each acreate submits when its task first runs,
        # and tasks first run in creation order. Names, ids and another agent's name are interleaved.
        refs = [agent.name if i % 3 else agent.id for i in range(30)]
        sends = [asyncio.create_task(client.agents.messages.acreate(ref, f"M{i:02d} ping"))
                 for i, ref in enumerate(refs)]
        sends += [asyncio.create_task(client.agents.messages.acreate(other.name, "interleaved")) for _ in range(3)]
        await asyncio.gather(*sends)

    asyncio.run(main())
    recall = assert_consistent(client, agent.id)
    tags = [m.content.split()[0] for m in recall if m.role == "user"][1:]
    assert tags == [f"M{i:02d}" for i in range(30)]
    assert len(client.agents.messages.list(other.id)) > 0


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


@pytest.mark.parametrize("caller", ["create", "acreate"])
def test_cancel_a_running_create(client: letta_nb.Client, caller: str) -> None:
    agent = client.agents.create("slow", model=SLOW)
    assert client.agents.messages.cancel(agent) is False  # nothing running yet
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            if caller == "create":
                out["r"] = client.agents.messages.create(agent, "hello there")
            else:
                out["r"] = asyncio.run(client.agents.messages.acreate(agent, "hello there"))
        except BaseException as e:
            out["e"] = e

    th = threading.Thread(target=run)
    th.start()
    wait_until(lambda: agent.id in client.runtime.running, "the turn to start")
    assert client.agents.messages.cancel(agent) is True
    th.join(30)
    assert not th.is_alive()
    assert "r" not in out
    # A documented error (a LettaNBError), carrying the partial turn, not a bare CancelledError.
    error = out["e"]
    assert isinstance(error, TurnCancelledError) and isinstance(error, letta_nb.LettaNBError)
    assert "slow" in str(error) and "cancel" in str(error)
    assert error.response.stop_reason == "cancelled"

    recall = assert_consistent(client, agent.id)
    assert recall[0].role == "user" and recall[0].content == "hello there"
    assert all(m.role in ("user", "assistant") for m in recall)  # no half-done tool call
    assert [m.id for m in error.response.messages] == [m.id for m in recall]
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



# ---- a tool sending messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", [message_agent, amessage_agent], ids=["sync", "async"])
def test_a_tool_messaging_its_own_agent_gets_an_error_at_once(client: letta_nb.Client, tool: Any) -> None:
    _SHARED["client"] = client
    # A short timeout, so that where the error is missing the call times out instead of hanging the suite;
    # parallel_safe with two calls in one step: the async calls then run in their own tasks.
    client.tools.upsert_from_function(tool, timeout=5, parallel_safe=True)
    agent = client.agents.create("narcissus", tools=[tool.__name__])
    line = call(tool.__name__, agent="narcissus", text="hello me")
    r = client.agents.messages.create(agent, f"{line}\n{line}")
    results = tool_messages(r.messages, tool.__name__)
    assert len(results) == 2
    for m in results:
        assert m.status == "error"
        assert m.content.startswith("ReentrantTurnError: ") and "'narcissus'" in m.content
        assert "cannot send a message" in m.content
    assert client.runtime.running == {} and len(client.runtime.locks) == 0
    recall = assert_consistent(client, agent.id)
    assert [m.content for m in recall if m.role == "user"] == [f"{line}\n{line}"]  # no ghost turn
    assert ReentrantTurnError.__name__ in letta_nb.__all__


@pytest.mark.parametrize("tool", [message_agent, amessage_agent], ids=["sync", "async"])
def test_a_tool_messaging_another_agent_gets_its_reply(client: letta_nb.Client, tool: Any) -> None:
    _SHARED["client"] = client
    client.tools.upsert_from_function(tool, timeout=20)
    sender = client.agents.create("sender", tools=[tool.__name__])
    echo = client.agents.create("echo")
    client.agents.messages.create(echo, "hello")  # first contact gets a greeting
    r = client.agents.messages.create(sender, call(tool.__name__, agent="echo", text="relayed words"))
    [result] = tool_messages(r.messages, tool.__name__)
    assert result.status == "success" and "relayed words" in result.content
    assert [m.content for m in client.agents.messages.list(echo) if m.role == "user"] == ["hello", "relayed words"]
    assert_consistent(client, sender.id)
    assert_consistent(client, echo.id)


def test_a_tool_locking_its_own_agent_through_the_client_gets_an_error_at_once(client: letta_nb.Client) -> None:
    _SHARED["client"] = client
    client.tools.upsert_from_function(edit_own_block, timeout=5)  # where the error is missing: a timeout
    agent = client.agents.create("editor", tools=["edit_own_block"])
    r = client.agents.messages.create(agent, call("edit_own_block", agent="editor", value="Name: Ed"))
    [result] = tool_messages(r.messages, "edit_own_block")
    assert result.status == "error" and result.content.startswith("ReentrantLockError: ")
    assert "agent turn running this tool" in result.content
    assert client.agents.blocks.retrieve(agent, "human").value == ""  # nothing changed behind the turn's back
    assert_consistent(client, agent.id)
