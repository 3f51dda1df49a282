"""The runtime thread: Ctrl-C during a blocking call cancels the step cleanly and keeps what was said."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import letta_nb


def _interrupt_when_streaming(client, agent_id: str) -> threading.Thread:
    """Raise KeyboardInterrupt in the main thread once the agent's turn is running (like a kernel interrupt)."""

    def waiter() -> None:
        deadline = time.monotonic() + 10
        while agent_id not in client.runtime.running and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.8)  # past the reasoning, into the reply (ttft 50 ms, ~40 tokens/s)
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as Ctrl-C or a kernel interrupt sends

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    return t


def test_ctrl_c_cancels_the_step_and_keeps_the_partial_reply(client):
    agent = client.agents.create("slow", model="offline?latency_ms=50&tps=40")
    t = _interrupt_when_streaming(client, agent.id)
    with pytest.raises(KeyboardInterrupt):
        client.agents.messages.create(agent.id, "hello there, please say something long")
    t.join()
    assert agent.id not in client.runtime.running
    messages = client.agents.messages.list(agent.id)
    assert [m.role for m in messages][:1] == ["user"]
    assert messages[0].content == "hello there, please say something long"
    partial = [m for m in messages if m.role == "assistant"]
    assert len(partial) == 1 and partial[0].status == "cancelled" and partial[0].content
    assert not partial[0].tool_calls  # no dangling tool call without its result
    steps = _steps(client, agent.id)
    assert steps[-1].stop_reason == "cancelled"
    # the agent is usable afterwards and its sequence continues without gaps or duplicates
    r = client.agents.messages.create(agent.id, "are you still there?")
    seqs = [m.seq for m in client.agents.messages.list(agent.id)]
    assert seqs == sorted(set(seqs)) and r.stop_reason == "end_turn"


def test_closing_a_stream_early_cancels_the_turn_and_keeps_the_streamed_reply(client):
    agent = client.agents.create("streamer", model="offline?tps=40")
    seen = []
    for event in client.agents.messages.stream(agent.id, "hello there"):
        if event.message_type == "assistant_message":
            seen.append(event.text)
            if len(seen) == 3:
                break
    messages = client.agents.messages.list(agent.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].status == "cancelled" and messages[1].content.startswith("".join(seen))
    assert _steps(client, agent.id)[-1].stop_reason == "cancelled"
    assert agent.id not in client.runtime.running


def test_async_twin_from_another_loop_and_sync_call_from_runtime_loop_is_refused(client):
    import asyncio

    agent = client.agents.create("twin")

    async def main():
        return await client.agents.messages.acreate(agent.id, "hello")

    assert asyncio.run(main()).stop_reason == "end_turn"

    async def inside():
        client.agents.list()

    with pytest.raises(RuntimeError, match="use the async API"):
        client._thread.run(inside())


def test_closed_client_gives_a_clear_error(tmp_path):
    c = letta_nb.connect(tmp_path / "s.db")
    c.close()
    c.close()  # idempotent
    with pytest.raises(letta_nb.LettaNBError, match="closed"):
        c.agents.list()


def _steps(client, agent_id):
    return client._thread.run(client.runtime.store.step_rows(agent_id))
