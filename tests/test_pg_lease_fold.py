"""The turn's end asks the step commit, not a peek, whether anyone waits for the lease (PostgreSQL, issue 12).

A turn on PostgreSQL read the agent's lease row twice, each a round trip on a loaded server: at its start
(still ours? has the agent or the tools changed?) and at its end (does another process wait? then give the
lease up at once). The step commit's statement now answers the second question for the agent it fenced
(store/postgres/leases.py ``landed``), and runtime/leases.py ``done`` uses that answer. The start's read
stays (it overlaps the model call now: test_pg_lease_overlap.py): a tool re-registration or a shared block's
version bump takes no agent lease, so only a read sees it.

These tests count the peeks a quiet turn makes (one; two before the fold), check that a waiter the commit
saw makes the turn's end give the lease up with no read (on both of the writer's paths), and that a waiter
in another real process, a version bump and a tool re-registration by another process are each seen at the
next turn here. The idle lease is kept for minutes (``_GRACE``), so no timer hands anything over.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from agent_helpers import finish, lease_events, on_loop, run_child, wait_until
from store_query import query

import letta_nb
from letta_nb.store.backend import StepWrite

NAME = 'From my core memory: "Name: Zed"'


def peeks_answered(client: letta_nb.Client) -> int:
    """Lease peeks answered so far, once none is pending or in flight (a turn's end used to leave one out)."""
    batcher = client._runtime.store.writer.peeks
    wait_until(lambda: not batcher._tasks and not batcher._pending, "the lease peeks to be answered")
    return int(batcher.peeks)


def tickets(url: str, agent_id: str) -> int:
    return int(query(url, "SELECT count(*) FROM lease_waiters WHERE agent_id = ?", agent_id)[0][0])


def test_a_quiet_turn_reads_the_lease_row_once(kept_url):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.agents.messages.create(agent_id, input="warm")  # the grant: no peek, a queue op
        before, seen = peeks_answered(client), len(lease_events(client))
        turns = 8
        for i in range(turns):
            client.agents.messages.create(agent_id, input=f"hello {i}")
        assert peeks_answered(client) - before == turns  # its start's; the end's came with the commit (2 before)
        assert lease_events(client)[seen:] == ["reused"] * turns
        assert client._runtime.leases.held[agent_id].busy is False  # kept: nobody waited


@pytest.mark.parametrize("group", ["plain", "with an op"])
def test_a_waiter_the_commit_saw_makes_the_turns_end_give_the_lease_up_with_no_read(kept_url, group):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        rt = client._runtime
        writer = rt.store.writer

        async def turn(waiter: bool) -> tuple[int, bool]:
            lease = await rt.leases.acquire(agent_id)
            if waiter:  # another holder's live ticket, committed before our step's statement
                await writer.submit(lambda c: c.execute(
                    "INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES ($1, 'elsewhere:1:x', $2)",
                    agent_id, time.time() + 60))
            write = StepWrite(agent_id, fence=(lease.token, lease.last_seq), last_seq=lease.last_seq,
                              lease_until=rt.leases.until(lease))
            # "with an op": the group is a transaction (fences as their own statement), not the one statement
            ops = [writer.submit(lambda c: c.fetchval("SELECT 1"))] if group == "with an op" else []
            await asyncio.gather(writer.submit(write), *ops)
            rt.leases.renewed(lease, lease.last_seq)
            before = writer.peeks.peeks + len(writer.peeks._pending)
            rt.leases.done(lease)
            asked = writer.peeks.peeks + len(writer.peeks._pending) - before
            for _ in range(50):  # a give-up is a task: let it run (its release is one op of the writer)
                if agent_id not in rt.leases.held:
                    break
                await asyncio.sleep(0.01)
            return asked, agent_id in rt.leases.held

        assert on_loop(client, turn(waiter=False)) == (0, True)  # nobody waits: kept, and nothing read
        assert on_loop(client, turn(waiter=True)) == (0, False)  # a waiter: given up at once, nothing read
        wait_until(lambda: "released" in lease_events(client), "the release")
        assert query(kept_url, "SELECT holder FROM agent_leases WHERE agent_id = ?", agent_id)[0][0] is None


CLIENT = """
import sys, letta_nb
with letta_nb.connect(sys.argv[1], lease_timeout=100) as client:
    client.agents.blocks.update(sys.argv[2], "human", value="Name: Zed")
print("done")
"""


def test_a_waiter_in_another_process_after_our_commit_gets_the_lease_at_our_next_turn(kept_url):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.agents.messages.create(agent_id, input="warm")
        token = client._runtime.leases.held[agent_id].token
        child = run_child(CLIENT, kept_url, agent_id)  # queues behind our idle lease: nothing of ours reads the row
        wait_until(lambda: tickets(kept_url, agent_id) == 1, "the other process's ticket", timeout=60)
        assert child.poll() is None
        reply = client.agents.messages.create(agent_id, input="What is my name?")
        assert NAME in str(reply.text)  # the turn's start read the ticket, let the other process go first
        assert finish(child).strip() == "done"
        assert client._runtime.leases.held[agent_id].token > token + 1  # to the other process and back
        assert lease_events(client)[-4:] == ["released", "restarted", "waited", "acquired"]  # its answer dropped


RAW = """
import sys
from letta_nb.testing.pgserver import SyncConnection
conn = SyncConnection(sys.argv[1])
conn.execute("UPDATE blocks SET value = 'Name: Zed' WHERE agent_id = ? AND label = 'human'", (sys.argv[2],))
conn.execute("UPDATE agents SET version = version + 1 WHERE id = ?", (sys.argv[2],))
"""


def test_a_version_bump_by_another_process_without_the_lease_is_seen_at_the_next_turn(kept_url):
    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.agents.messages.create(agent_id, input="warm")
        finish(run_child(RAW, kept_url, agent_id))  # as a shared block's trigger does: no lease taken
        assert NAME in str(client.agents.messages.create(agent_id, input="What is my name?").text)
        version = query(kept_url, "SELECT version FROM agents WHERE id = ?", agent_id)[0][0]
        assert client._runtime.leases.held[agent_id].version == version


TOOL = '''
def shout(text: str) -> str:
    """Shout a text back."""
    return text.upper() + "{suffix}"
'''

REGISTER = """
import sys, letta_nb
sys.path.insert(0, sys.argv[2])
from shout_v2 import shout
with letta_nb.connect(sys.argv[1]) as client:
    client.tools.upsert_from_function(shout)
print("done")
"""


def test_a_tool_re_registered_by_another_process_is_seen_at_the_next_turn(kept_url, tmp_path: Path, monkeypatch):
    (tmp_path / "shout_v1.py").write_text(TOOL.format(suffix=""))
    (tmp_path / "shout_v2.py").write_text(TOOL.format(suffix=" (v2)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    from shout_v1 import shout  # type: ignore[import-not-found]

    with letta_nb.connect(kept_url) as client:
        agent_id = client.agents.create("sam").id
        client.tools.upsert_from_function(shout)
        client.agents.tools.attach(agent_id, "shout")

        def result() -> str:
            r = client.agents.messages.create(agent_id, '/call shout {"text": "hi"}')
            return next(str(m.content) for m in r.messages if m.role == "tool" and m.name == "shout")

        assert result() == "HI"
        assert finish(run_child(REGISTER, kept_url, str(tmp_path))).strip() == "done"  # no agent lease taken
        assert result() == "HI (v2)"
        counter = query(kept_url, "SELECT value FROM store_counters WHERE name = 'tools'")[0][0]
        assert client._runtime.leases.held[agent_id].tools_version == counter
