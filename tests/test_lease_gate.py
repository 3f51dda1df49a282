"""The lease gate (issue 19): a kept lease is reused with no read while ``PRAGMA data_version`` vouches for it.

A turn used to read the agent's lease row twice (at acquire: still ours? at done: does anyone wait?), ~20 us
each on a ~600 us turn. runtime/leases.py now skips both reads while the step writer's stamp
(store/sqlite/step_writer.py StepWriter.stamp) is what it was when the row was last read: the inline
connection's ``PRAGMA data_version`` changes when any other connection commits, and the writer marks every op
and unfenced write of its own. These tests count the reads in the quiet case (0 a turn; 2 before the gate),
then change the agent between two turns from a real second process (a raw sqlite3 connection, or another
letta_nb client queueing a ticket), from this process's async engine and from an op of this process's own
writer, and check the next turn sees each change. The idle lease is kept for minutes here (``_GRACE``), so
the gate, not the grace timer, decides.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from agent_helpers import finish, lease_events, on_loop, run_child, wait_until
from store_query import query

import letta_nb
from letta_nb.errors import AgentNotFoundError
from letta_nb.runtime import leases as runtime_leases
from letta_nb.store.backend import StepWrite
from letta_nb.store.sqlite import fulltext
from letta_nb.store.sqlite import leases as sqlite_leases
from letta_nb.store.sqlite.checkpointer import writer_connection
from letta_nb.store.sqlite.step_writer import StepWriter

NAME = 'From my core memory: "Name: Zed"'


@pytest.fixture
def peeks(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Counts reads of the lease row (``leases.peek``) by agent id; the idle lease is kept 10 minutes."""
    monkeypatch.setattr(runtime_leases, "_GRACE", 600.0)
    counted: collections.Counter[str] = collections.Counter()
    real = sqlite_leases.peek

    def peek(cur: Any, agent_id: str, now: float) -> Any:
        counted[agent_id] += 1
        return real(cur, agent_id, now)

    monkeypatch.setattr(sqlite_leases, "peek", peek)
    return counted


def warm(client: letta_nb.Client, name: str = "sam", **create: Any) -> str:
    agent_id = client.agents.create(name, **create).id
    for i in range(2):  # the grant, then a turn that reads the row once more: the gate has a stamp after it
        client.agents.messages.create(agent_id, input=f"warm {i}")
    return agent_id


def reply(response: Any) -> str:
    return str(response.text)


RAW = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA busy_timeout = 10000")
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE blocks SET value = 'Name: Zed' WHERE agent_id = ? AND label = 'human'", (sys.argv[2],))
conn.execute("UPDATE agents SET version = version + 1 WHERE id = ?", (sys.argv[2],))
conn.execute("COMMIT")
"""

CLIENT = """
import sys, letta_nb
with letta_nb.connect(sys.argv[1], lease_timeout=100) as client:
    if sys.argv[3] == "update":
        client.agents.blocks.update(sys.argv[2], "human", value="Name: Zed")
    else:
        client.agents.delete(sys.argv[2])
print("done")
"""


def test_a_kept_lease_is_reused_with_no_read_of_its_row_while_nothing_else_commits(tmp_path: Path, peeks):
    path = tmp_path / "quiet.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        peeks.clear()
        before = len(lease_events(client))
        turns = fulltext.BATCH // 3 + 1  # past a batch of messages: the index's catch-up op ran meanwhile
        for i in range(turns):
            client.agents.messages.create(agent_id, input=f"hello {i}")
        assert peeks[agent_id] == 0  # two a turn before the gate
        assert lease_events(client)[before:] == ["reused"] * turns
        assert query(str(path), "SELECT upto FROM fulltext_watermark")[0][0] > 0
        lease = client._runtime.leases.held[agent_id]
        assert lease.last_seq == len(client.agents.messages.list(agent_id))
    # what the runtime trusted is what the file holds (read by another connection after close)
    token, last_seq = query(str(path), "SELECT l.token, a.last_seq FROM agent_leases l JOIN agents a "
                                       "ON a.id = l.agent_id WHERE a.id = ?", agent_id)[0]
    assert (token, last_seq) == (lease.token, lease.last_seq)


def test_a_quiet_turn_reads_the_stamp_once_its_end_asks_its_commit(tmp_path: Path, peeks):
    """The turn's end takes whether anyone waits from its commit's fence (the fold, as on PostgreSQL): a quiet
    turn runs one ``PRAGMA data_version``, at its start (two before)."""
    with letta_nb.connect(tmp_path / "fold.db") as client:
        agent_id = warm(client)
        peeks.clear()
        statements: list[str] = []
        client._runtime.store.writer._inline.set_trace_callback(statements.append)
        turns = 5
        for i in range(turns):
            client.agents.messages.create(agent_id, input=f"hello {i}")
        assert statements.count("PRAGMA data_version") == turns
        assert sum(s.startswith("UPDATE agents SET") and "RETURNING EXISTS" in s for s in statements) == turns
        assert peeks[agent_id] == 0 and client._runtime.leases.held[agent_id].busy is False  # kept


def test_a_waiter_the_commit_saw_makes_the_turns_end_give_the_lease_up_with_no_read(tmp_path: Path, peeks):
    """Our own op commits beside the step (the gate's stamp moves, so before the fold the end peeked): whether
    a ticket is queued comes from the step's fence, and decides the lease at once, with no read."""
    path = tmp_path / "waiter.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        rt = client._runtime
        writer = rt.store.writer

        async def turn(waiter: bool) -> tuple[int, bool]:
            lease = await rt.leases.acquire(agent_id)
            ticket = "INSERT INTO lease_waiters (agent_id, holder, expires_at) VALUES (?, 'elsewhere:1:x', ?)"
            op = (lambda c: c.execute(ticket, (agent_id, time.time() + 60))) if waiter \
                else (lambda c: c.execute("SELECT 1"))
            await writer.submit(op)  # committed before the step's fence reads the waiters
            write = StepWrite(agent_id, fence=(lease.token, lease.last_seq), last_seq=lease.last_seq,
                              lease_until=rt.leases.until(lease))
            await writer.submit(write)
            rt.leases.renewed(lease, lease.last_seq)
            before = peeks[agent_id]
            rt.leases.done(lease)
            for _ in range(50):  # a give-up is a task: let it run (its release is one op of the writer)
                if agent_id not in rt.leases.held:
                    break
                await asyncio.sleep(0.01)
            return peeks[agent_id] - before, agent_id in rt.leases.held

        assert on_loop(client, turn(waiter=False)) == (0, True)  # nobody waits: kept, and nothing read
        assert on_loop(client, turn(waiter=True)) == (0, False)  # a waiter: given up at once, nothing read
        wait_until(lambda: "released" in lease_events(client), "the release")
        assert query(str(path), "SELECT holder FROM agent_leases WHERE agent_id = ?", agent_id)[0][0] is None


def test_another_process_editing_the_agent_between_two_turns_is_seen_at_the_next_turn(tmp_path: Path, peeks):
    path = tmp_path / "raw.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        finish(run_child(RAW, str(path), agent_id))  # a block and the version, committed by another process
        peeks.clear()
        assert NAME in reply(client.agents.messages.create(agent_id, input="What is my name?"))
        assert peeks[agent_id] >= 1
        version = query(str(path), "SELECT version FROM agents WHERE id = ?", agent_id)[0][0]
        assert client._runtime.leases.held[agent_id].version == version
        peeks.clear()
        client.agents.messages.create(agent_id, input="hello")  # (a question would search: the vector store
        assert peeks[agent_id] == 0  # syncs on its own connection) read once, trusted again


def test_another_process_queueing_for_the_lease_gets_it_at_our_next_turn(tmp_path: Path, peeks):
    path = tmp_path / "ticket.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        token = client._runtime.leases.held[agent_id].token
        child = run_child(CLIENT, str(path), agent_id, "update")  # its blocks.update queues behind our idle lease
        wait_until(lambda: query(str(path), "SELECT count(*) FROM lease_waiters WHERE agent_id = ?",
                                 agent_id)[0][0] == 1, "the other process's ticket", timeout=60)
        assert child.poll() is None  # still waiting: nothing of ours read the row since
        assert NAME in reply(client.agents.messages.create(agent_id, input="What is my name?"))
        assert finish(child).strip() == "done"
        assert client._runtime.leases.held[agent_id].token > token + 1  # it went to the other process and back
        assert lease_events(client)[-3:] == ["released", "waited", "acquired"]


def test_another_process_deleting_the_agent_is_seen_at_the_next_turn(tmp_path: Path, peeks):
    path = tmp_path / "delete.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        child = run_child(CLIENT, str(path), agent_id, "delete")
        wait_until(lambda: query(str(path), "SELECT count(*) FROM lease_waiters WHERE agent_id = ?",
                                 agent_id)[0][0] == 1, "the other process's ticket", timeout=60)
        with pytest.raises(AgentNotFoundError):
            client.agents.messages.create(agent_id, input="are you there?")
        assert finish(child).strip() == "done"
        assert agent_id not in client._runtime.leases.held
    assert query(str(path), "SELECT count(*) FROM agents WHERE id = ?", agent_id)[0][0] == 0


def test_this_process_engine_changing_the_agent_is_seen_at_the_next_turn(tmp_path: Path, peeks):
    path = tmp_path / "engine.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        store = client._runtime.store

        async def bump() -> None:  # the async engine is another connection of this process
            async with store.engine.begin() as conn:
                await conn.execute(sa.text("UPDATE blocks SET value = 'Name: Zed' WHERE agent_id = :a AND "
                                           "label = 'human'"), {"a": agent_id})
                await conn.execute(sa.text("UPDATE agents SET version = version + 1 WHERE id = :a"), {"a": agent_id})

        on_loop(client, bump())
        peeks.clear()
        assert NAME in reply(client.agents.messages.create(agent_id, input="What is my name?"))
        assert peeks[agent_id] >= 1
        # the public path: blocks.update bumps the version through the engine under the kept lease
        client.agents.blocks.update(agent_id, "human", value="Name: Ada")
        client.agents.messages.create(agent_id, input="hello")
        version = query(str(path), "SELECT version FROM agents WHERE id = ?", agent_id)[0][0]
        assert client._runtime.leases.held[agent_id].version == version


def test_an_op_of_our_own_writer_on_the_agent_is_seen_at_the_next_turn(tmp_path: Path, peeks):
    path = tmp_path / "op.db"
    with letta_nb.connect(path) as client:
        agent_id = warm(client)
        writer = client._runtime.store.writer

        async def bump() -> None:  # on the inline connection: its data_version does not move
            await writer.submit(functools.partial(sqlite_leases.bump_version, agent_id=agent_id, token=None))

        on_loop(client, bump())
        peeks.clear()
        client.agents.messages.create(agent_id, input="hello")
        assert peeks[agent_id] >= 1
        version = query(str(path), "SELECT version FROM agents WHERE id = ?", agent_id)[0][0]
        assert client._runtime.leases.held[agent_id].version == version


def test_a_kept_lease_close_to_its_expiry_is_read_and_granted_again(tmp_path: Path, peeks):
    path = tmp_path / "expiry.db"
    with letta_nb.connect(path, lease_ttl=3.0) as client:
        agent_id = warm(client)
        lease = client._runtime.leases.held[agent_id]
        expires = query(str(path), "SELECT expires_at FROM agent_leases WHERE agent_id = ?", agent_id)[0][0]
        assert lease.expires_at == expires  # the renewal the last landed commit carried
        wait_until(lambda: time.time() > lease.expires_at - 1.0, "the kept lease's last second", timeout=10)
        peeks.clear()
        before = len(lease_events(client))
        client.agents.messages.create(agent_id, input="hello")
        assert peeks[agent_id] >= 1
        assert lease_events(client)[before:before + 2] == ["released", "acquired"]
        assert client._runtime.leases.held[agent_id].token == lease.token + 1


def test_the_writer_stamp_changes_with_every_commit_the_holder_does_not_know_of(tmp_path: Path):
    path = str(tmp_path / "stamp.db")
    with letta_nb.connect(path) as client:
        a = client.agents.create("a").id
        b = client.agents.create("b").id
    writer = StepWriter(functools.partial(writer_connection, path))

    async def scenario() -> list[str]:
        changed: list[str] = []

        async def step(label: str, item: Any) -> None:
            before = writer.stamp(a), writer.stamp(b)
            await writer.submit(item)
            after = writer.stamp(a), writer.stamp(b)
            changed.append(f"{label}:{''.join('ab'[i] for i in (0, 1) if before[i] != after[i])}")

        await step("op on b", functools.partial(sqlite_leases.drop_ticket, agent_id=b, holder="nobody"))
        await step("op naming no agent", lambda cur: sqlite_leases.bump_counter(cur, "tools"))
        await step("unfenced write of a", StepWrite(a, context_summary="note"))
        await step("message index catch-up", fulltext.catch_up)  # names no agent, writes no agent row
        last_seq = query(path, "SELECT last_seq FROM agents WHERE id = ?", a)[0][0]
        token = await writer.submit(functools.partial(sqlite_leases.acquire, agent_id=a, holder="me", pid=1,
                                                      host="h", now=time.time(), ttl=30.0, ticket_ttl=5.0))
        await step("fenced write of a", StepWrite(a, fence=(token.token, last_seq), last_seq=last_seq))
        stamp = writer.stamp(a)
        other = writer_connection(path, 1000)  # another connection commits: both agents' stamps move
        other.execute("UPDATE agents SET version = version + 1 WHERE id = ?", (b,))
        other.close()
        changed.append(f"another connection:{'a' if writer.stamp(a) != stamp else ''}")
        return changed

    try:
        assert asyncio.run(scenario()) == ["op on b:b", "op naming no agent:ab", "unfenced write of a:a",
                                           "message index catch-up:", "fenced write of a:", "another connection:a"]
    finally:
        writer.close()
