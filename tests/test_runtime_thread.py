"""The runtime thread: Ctrl-C during a blocking call cancels the step cleanly and keeps what was said."""

from __future__ import annotations

import _thread
import asyncio
import os
import signal
import threading

import pytest

import letta_nb
from letta_nb.llm.base import ToolCallDelta
from letta_nb.llm.registry import resolve_model
from letta_nb.runtime.events import SendMessageParser

SLOW_SPEC = "offline?latency_ms=50&tps=40"


class PausesMidReply:
    """Wraps the offline model; in its first stream, once some reply words went out, it holds the rest back
    until the turn is cancelled or the test sets ``release`` (so a Ctrl-C lands mid-reply on any machine, not
    after a guessed sleep)."""

    supports_parallel_tool_calls = True

    def __init__(self, inner):
        self.inner, self.name, self.context_window = inner, inner.name, inner.context_window
        self.mid_reply, self.release = threading.Event(), threading.Event()

    async def stream(self, messages, tools):
        parser, reply = SendMessageParser(), ""
        async for event in self.inner.stream(messages, tools):
            yield event
            if isinstance(event, ToolCallDelta) and not self.mid_reply.is_set():
                reply += parser.feed(event.arguments)
                if len(reply) > 10:
                    self.mid_reply.set()
                    while not self.release.is_set():  # a condition, polled; the cancellation ends it
                        await asyncio.sleep(0.005)


def _interrupt_when_mid_reply(model: PausesMidReply) -> threading.Thread:
    """Raise KeyboardInterrupt in the main thread once the reply is streaming (like a kernel interrupt)."""

    def waiter() -> None:
        if model.mid_reply.wait(120):  # only a hang guard; the test fails below if it never streamed
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as Ctrl-C or a kernel interrupt sends

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    return t


def test_ctrl_c_cancels_the_step_and_keeps_the_partial_reply(client):
    model = PausesMidReply(resolve_model(SLOW_SPEC))
    client.runtime.model_cache.set(SLOW_SPEC, model)  # installed before the agent exists, as record_prompts does
    agent = client.agents.create("slow", model=SLOW_SPEC)
    t = _interrupt_when_mid_reply(model)
    with pytest.raises(KeyboardInterrupt):
        client.agents.messages.create(agent.id, "hello there, please say something long")
    t.join()
    assert agent.id not in client.runtime.running
    messages = client.agents.messages.list(agent.id)
    assert [m.role for m in messages][:1] == ["user"]
    assert messages[0].content == "hello there, please say something long"
    partial = [m for m in messages if m.role == "assistant"]
    assert len(partial) == 1 and partial[0].status == "cancelled" and len(partial[0].content) > 10  # what streamed
    assert not partial[0].tool_calls  # no dangling tool call without its result
    steps = _steps(client, agent.id)
    assert steps[-1].stop_reason == "cancelled"
    # the agent is usable afterwards and its sequence continues without gaps or duplicates
    r = client.agents.messages.create(agent.id, "are you still there?")
    seqs = [m.seq for m in client.agents.messages.list(agent.id)]
    assert seqs == sorted(set(seqs)) and r.stop_reason == "end_turn"


@pytest.mark.parametrize("how", ["create", "stream"])
def test_interrupt_main_is_noticed_while_the_model_is_still_held(client, how):
    """``_thread.interrupt_main()`` sends no signal (it is how ipykernel interrupts on Windows): the blocked
    caller must notice it while the turn runs, not when it ends."""
    model = PausesMidReply(resolve_model(SLOW_SPEC))
    client.runtime.model_cache.set(SLOW_SPEC, model)
    agent = client.agents.create("held", model=SLOW_SPEC)
    returned = threading.Event()

    def interrupter() -> None:
        if model.mid_reply.wait(60):
            _thread.interrupt_main()
        if not returned.wait(20):  # only a hang guard: where the interrupt goes unnoticed, let the turn end
            model.release.set()

    t = threading.Thread(target=interrupter, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        if how == "create":
            client.agents.messages.create(agent.id, "hello there, please say something long")
        else:
            for _ in client.agents.messages.stream(agent.id, "hello there, please say something long"):
                pass
    returned.set()
    assert not model.release.is_set(), "the call returned only after the model was released"
    t.join()
    assert client.runtime.running == {}
    messages = client.agents.messages.list(agent.id)
    partial = [m for m in messages if m.role == "assistant"]
    assert len(partial) == 1 and partial[0].status == "cancelled" and len(partial[0].content) > 10
    assert _steps(client, agent.id)[-1].stop_reason == "cancelled"
    model.release.set()
    assert client.agents.messages.create(agent.id, "still there?").stop_reason == "end_turn"


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
