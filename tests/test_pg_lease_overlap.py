"""A turn on a kept lease asks the model while the lease's read is out, and shows or runs nothing before it is
back (PostgreSQL, issue 12; runtime/leases.py ``acquire(speculate=True)``, agent_loop.py ``_Turn.confirm``).

The read at a turn's start (is the kept lease still ours, does anyone wait, has the agent changed) was a round
trip before the model call: ~2-5 ms a turn at 100 agents. It now overlaps the model call; the model's first
event waits for it. When it says the lease must be given up (a waiter) or the agent changed, the model's
answer is dropped unseen and the turn runs again on the fresh state: nothing of the first run is stored,
streamed or executed. These tests hold the read back to show the order, queue a waiter (a live ticket) to
force the restart, and count the model's calls, the streamed events, the stored rows and a tool's runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import call, lease_events, on_loop
from store_query import query

import letta_nb
from letta_nb.llm.offline import OfflineModel


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The offline model's calls as they start: each the last message it was shown."""
    calls: list[str] = []
    real = OfflineModel.stream

    async def stream(self: OfflineModel, messages: list[dict[str, Any]], *args: Any, **kw: Any) -> AsyncIterator[Any]:
        calls.append(str(messages[-1].get("content")))
        async for event in real(self, messages, *args, **kw):
            yield event

    monkeypatch.setattr(OfflineModel, "stream", stream)
    return calls


def queue_waiter(client: letta_nb.Client, agent_id: str, for_s: float) -> None:
    """Another holder's live ticket for the agent's lease, expiring in ``for_s`` (nobody comes to take it)."""
    writer = client._runtime.store.writer

    async def insert() -> None:
        await writer.submit(lambda c: c.execute(
            "INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES ($1, 'elsewhere:1:x', $2)",
            agent_id, time.time() + for_s))

    on_loop(client, insert())


def test_the_model_is_asked_while_the_lease_read_is_out(kept_url, model_calls, monkeypatch):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.agents.messages.create(agent_id, input="warm")  # the grant; the lease is kept after it
        batcher = client._runtime.store.writer.peeks
        order: list[str] = []
        real_peek = batcher.peek

        def held_peek(agent: str, now: float) -> Any:
            order.append("read asked")
            answer = real_peek(agent, now)

            async def later() -> Any:
                row = await answer
                for _ in range(300):  # held until the model is asked; a turn that waited for it: 3 s, then on
                    if len(model_calls) > before:
                        order.append("model asked")
                        break
                    await asyncio.sleep(0.01)
                order.append("read answered")
                return row

            return asyncio.ensure_future(later())

        monkeypatch.setattr(batcher, "peek", held_peek)
        before = len(model_calls)
        reply = client.agents.messages.create(agent_id, input="My name is Zed.")
        assert order == ["read asked", "model asked", "read answered"]
        assert model_calls[before:].count("My name is Zed.") == 1  # asked once: the read confirmed the lease
        assert reply.stop_reason == "end_turn" and reply.text
        assert lease_events(client)[-1] == "reused"


def test_a_waiter_the_read_finds_drops_the_models_answer_unseen_and_the_turn_runs_again(kept_url, model_calls):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.agents.messages.create(agent_id, input="warm")
        token = client._runtime.leases.held[agent_id].token
        stored = len(client.agents.messages.list(agent_id))
        queue_waiter(client, agent_id, for_s=0.5)  # queued after our commit: only the next turn's read sees it
        asked = len(model_calls)
        events = list(client.agents.messages.stream(agent_id, "My name is Zed."))
        assert model_calls[asked:].count("My name is Zed.") == 2  # asked at once, then again after the waiter
        shown = "".join(e.text for e in events if isinstance(e, letta_nb.AssistantDelta))
        steps_shown = sum(isinstance(e, letta_nb.StepEvent) for e in events)
        assert [e.stop_reason for e in events if isinstance(e, letta_nb.StopEvent)] == ["end_turn"]
        rows = client.agents.messages.list(agent_id)[stored:]
        assert [m.content for m in rows if m.role == "user"] == ["My name is Zed."]  # stored once
        assert [m.seq for m in rows] == list(range(rows[0].seq, rows[0].seq + len(rows)))
        steps = query(kept_url, "SELECT count(*) FROM steps WHERE agent_id = ?", agent_id)[0][0]
        assert steps_shown == steps - 1 >= 1  # every step shown is stored, none of the dropped run's
        replies = [json.loads(c.arguments)["message"] for m in rows for c in m.tool_calls if c.name == "send_message"]
        assert len(replies) == 1 and shown == replies[0]  # the reply shown once, as stored
        assert client._runtime.leases.held[agent_id].token > token  # given up, granted again after the ticket
        assert lease_events(client)[-4:-2] == ["released", "restarted"]
        restarts = letta_nb.probes.leases(client).query("event == 'restarted'")
        assert list(restarts["agent_id"]) == [agent_id] and list(restarts["token"]) == [token]


def touch(path: str) -> str:
    """Append a line to a file.

    Args:
        path: The file.
    """
    with open(path, "a") as f:
        f.write("ran\n")
    return "wrote"


def test_an_answer_to_an_approval_runs_its_tool_once_when_the_read_finds_a_waiter(kept_url, tmp_path: Path):
    out = tmp_path / "side.txt"
    with letta_nb.connect(kept_url) as client:
        client.tools.upsert_from_function(touch, requires_approval=True)
        agent_id = client.agents.create("ann", tools=["touch"]).id
        asked = client.agents.messages.create(agent_id, call("touch", path=str(out)))
        assert asked.stop_reason == "requires_approval" and not out.exists()
        queue_waiter(client, agent_id, for_s=0.5)
        r = client.agents.messages.approve(agent_id, asked.pending_approvals[0].id)
        assert r.stop_reason == "end_turn"
        assert out.read_text().splitlines() == ["ran"]  # run after the read: once, not once per run of the turn
        assert lease_events(client).count("restarted") == 1
