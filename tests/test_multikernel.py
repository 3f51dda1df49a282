"""Many kernels, one store (issue 11): real processes on one SQLite file, checked against the file itself.

The parent creates the store and its agents, starts child processes (the driver of
letta_nb/bench/multikernel.py, or tests/multikernel_child.py doing one command at a time), and afterwards
audits the file: every user message stored exactly once, each process's messages to an agent in its send
order, contiguous ``seq`` per agent, every step whole, ``PRAGMA integrity_check`` ok. A turn whose commit is
refused (its lease expired and was taken) recovers inside (takes the lease again, re-runs the step), so the
drivers see no ``StaleCommitError``; they would retry one, as a caller should, and any other error is a
failed turn. Lease expiry is forced, not waited for by luck: a process is SIGKILLed or SIGSTOPped while its
model call (which runs under the lease) is announced, and the test goes on only when the other processes
have moved past it. Changes that are not turns (passages, uploads) and the recovery itself are tested in
test_multikernel_mutations.py.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import wait_until
from multikernel_child import probe_v1, probe_v2
from store_query import query

import letta_nb
from letta_nb.bench.multikernel import Child, audit, text_of

CHILD = str(Path(__file__).with_name("multikernel_child.py"))
MODEL = "offline?latency_ms=5"


@pytest.fixture
def children(tmp_path: Path):
    """Start children with ``children.driver(...)`` / ``children.serve(...)``; all are killed at the end."""

    class Children(list):
        def driver(self, db: Path, name: str, **options: Any) -> Child:
            self.append(Child.driver(str(db), str(tmp_path / f"{name}.err"), **options))
            return self[-1]

        def serve(self, db: Path, name: str, lease_ttl: float | None = None,
                  lease_timeout: float | None = None) -> Child:
            args = [sys.executable, CHILD, str(db), str(lease_ttl or "-"), str(lease_timeout or "-")]
            self.append(Child(args, str(tmp_path / f"{name}.err")))
            return self[-1]

    running = Children()
    yield running
    for child in running:
        child.close()


def make_store(db: Path, agents: list[str], model: str = MODEL) -> None:
    with letta_nb.connect(db) as client:
        for name in agents:
            client.agents.create(name, model=model)


def expected(procs: range, agents: list[str], k: int) -> dict[str, dict[int, list[str]]]:
    return {a: {p: [text_of(p, a, j) for j in range(k)] for p in procs} for a in agents}


def finish(drivers: list[Child]) -> list[dict[str, Any]]:
    """Each driver's report; no turn may have failed."""
    done = [c.wait_for("done")["done"] for c in drivers]
    failed = [f for d in done for f in d["failed"]]
    assert failed == [], f"{len(failed)} turns failed, e.g. {failed[:3]}"
    return done


def assert_store_whole(db: Path, procs: range, agents: list[str], k: int) -> dict[str, Any]:
    report = audit(str(db), expected(procs, agents, k))
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert report["order_violations"] == 0, report
    assert report["seq_errors"] == [] and report["half_steps"] == [], report
    assert report["integrity"] == "ok"
    return report


def lease_events(done: list[dict[str, Any]], agent: str | None = None) -> collections.Counter[str]:
    """Lease events the drivers' ``probes.leases()`` counted (of one agent, when given)."""
    events: collections.Counter[str] = collections.Counter()
    for d in done:
        events.update(d["leases"]["events"] if agent is None else d["leases"]["by_agent"].get(agent, {}))
    return events


def ask(child: Child, op: str, **args: Any) -> dict[str, Any]:
    child.write(json.dumps({"op": op, **args}))
    return child.wait_for("reply")


def test_four_processes_drive_eight_agents_and_every_message_is_stored_once_in_order(tmp_path, db_path, children):
    db, agents, k = db_path, [f"a{i}" for i in range(8)], 4
    make_store(db, agents)
    drivers = [children.driver(db, f"p{p}", procs=p, agents=",".join(agents), messages=k) for p in range(4)]
    for c in drivers:
        c.wait_for("ready")
    for c in drivers:  # all at once: a thread per agent in each process
        c.write("go")
    done = finish(drivers)
    assert sum(d["turns"] for d in done) == 4 * 8 * k
    report = assert_store_whole(db, range(4), agents, k)
    assert report["unexpected"] == 0
    assert lease_events(done)["acquired"] >= 8  # every agent's lease was taken, by someone


def lease_holder_pid(db: Path, agent: str) -> int | None:
    """The pid in the agent's lease row (None: nobody holds it), read as another process would."""
    rows = query(str(db), "SELECT l.pid FROM agent_leases l JOIN agents a ON a.id = l.agent_id "
                          "WHERE a.name = ? AND l.holder IS NOT NULL", agent)
    return rows[0][0] if rows else None


def test_a_process_killed_holding_a_lease_blocks_the_others_only_until_it_expires(tmp_path, db_path, children):
    db, agents, k = db_path, ["a0", "a1", "a2"], 3
    make_store(db, agents)
    victim = children.serve(db, "victim", lease_ttl=1.0)
    victim.wait_for("ready")
    assert ask(victim, "delay", spec=MODEL, hang_at=2)["reply"] == "installed"
    # Step 1 (the memory edit) commits; the model call of step 2 never returns: the victim dies holding a0.
    victim.write(json.dumps({"op": "send", "agent": "a0",
                             "text": '/call core_memory_append {"label": "human", "content": "victim fact"}'}))
    victim.wait_for("in_model")
    assert lease_holder_pid(db, "a0") == victim.proc.pid
    drivers = [children.driver(db, f"p{p}", procs=p, agents=",".join(agents), messages=k, lease_ttl=1.0)
               for p in range(3)]
    for c in drivers:
        c.wait_for("ready")
    for c in drivers:
        c.write("go")
    drivers[0].wait_for("sent")  # the drivers are running (a1, a2 are free) while a0 is still held
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait() == -signal.SIGKILL  # it was still running, holding the lease: killed, not crashed
    done = finish(drivers)
    report = assert_store_whole(db, range(3), agents, k)
    # The victim's first step is all there (its user message, the call and the tool's answer) or absent.
    victim_rows = query(str(db), "SELECT count(*) FROM messages WHERE content LIKE '%victim fact%'")[0][0]
    assert report["unexpected"] == (1 if victim_rows else 0)
    block = query(str(db), "SELECT b.value FROM blocks b JOIN agents a ON a.id = b.agent_id "
                           "WHERE a.name = 'a0' AND b.label = 'human'")[0][0]
    assert ("victim fact" in block) == bool(victim_rows)
    assert lease_events(done, "a0")["took_expired"] >= 1  # a driver took over the dead process's lease


def test_a_lease_lost_mid_turn_refuses_the_stale_commit_and_the_turn_recovers_stored_once(tmp_path, db_path, children):
    db, agents, k = db_path, ["a0", "a1", "a2"], 3
    make_store(db, agents)
    common = {"agents": ",".join(agents), "messages": k, "lease_ttl": 1.0}
    # p0's first call on each agent announces itself and takes a while; its retries are quick.
    p0 = children.driver(db, "p0", procs=0, slow=f"{len(agents)}:1500", **common)
    others = [children.driver(db, f"p{p}", procs=p, **common) for p in (1, 2)]
    for c in (p0, *others):
        c.wait_for("ready")
    p0.write("go")
    for _ in agents:  # p0 holds every agent's lease, each turn inside its model call
        p0.wait_for("in_model")
    p0.proc.send_signal(signal.SIGSTOP)  # a paused process: it cannot renew, its leases expire
    try:
        for c in others:
            c.write("go")

        def taken_over() -> bool:  # p1 or p2 committed a turn on every agent: p0's leases were all taken
            rows = query(str(db), "SELECT DISTINCT a.name FROM messages m JOIN agents a ON a.id = m.agent_id "
                                  "WHERE m.role = 'user' AND (m.content LIKE 'p1-%' OR m.content LIKE 'p2-%')")
            return len(rows) == len(agents) or all(c.proc.poll() is not None for c in others)

        wait_until(taken_over, "the other processes to take over p0's agents", timeout=60)
    finally:
        p0.proc.send_signal(signal.SIGCONT)
    done = finish([p0, *others])
    # Each of p0's paused turns was refused, took the lease again and re-ran its step: the caller saw no error.
    assert done[0]["stale_retries"] == 0
    assert_store_whole(db, range(3), agents, k)
    mine = lease_events(done[:1])
    assert mine["refused_commit"] >= len(agents) and mine["recovered"] == mine["refused_commit"]
    assert lease_events(done)["took_expired"] >= len(agents)


def test_a_block_update_in_one_process_survives_the_other_process_turns_and_reaches_its_prompt(db_path, children):
    db = db_path
    spec = "offline?latency_ms=100"
    make_store(db, ["shared"], model=spec)
    b = children.serve(db, "b", lease_ttl=5.0)
    b.wait_for("ready")
    assert ask(b, "delay", spec=spec, announce=100)["reply"] == "installed"  # B announces each model call
    with letta_nb.connect(db, lease_ttl=5.0) as a:
        for n in (1, 2):  # each turn appends a fact to the human block: a memory edit in process B
            assert "I like tea" in ask(b, "send", agent="shared", text=f"I like tea {n}")["reply"]
        b.lines.clear()  # the announcements of turns 1 and 2
        b.write(json.dumps({"op": "send", "agent": "shared", "text": "I like tea 3"}))
        b.wait_for("in_model")  # B's turn 3 is running (its model call is under way)
        a.agents.blocks.update("shared", "human", value="Name: Zed")
        assert "I like tea 3" in b.wait_for("reply")["reply"]
        assert "I like tea 4" in ask(b, "send", agent="shared", text="I like tea 4")["reply"]
        assert ask(b, "block", agent="shared", label="human")["reply"] == "Name: Zed\nUser: I like tea 4"
        assert 'From my core memory: "Name: Zed"' in ask(b, "send", agent="shared", text="What is my name?")["reply"]
    stored = query(str(db), "SELECT value FROM blocks WHERE label = 'human'")[0][0]
    assert stored == "Name: Zed\nUser: I like tea 4"  # A's update waited for B's turn 3, and B's turn 4 kept it
    report = audit(str(db), {"shared": {0: [f"I like tea {n}" for n in range(1, 5)] + ["What is my name?"]}})
    assert (report["lost"], report["duplicated"], report["seq_errors"], report["half_steps"]) == (0, 0, [], [])


def test_a_deleted_agent_and_a_replaced_tool_reach_the_other_process(tmp_path, db_path, children):
    db = db_path
    with letta_nb.connect(db) as a:
        a.tools.upsert_from_function(probe_v1, name="mk_probe")
        a.agents.create("doomed", model=MODEL)
        a.agents.create("toolie", model=MODEL, tools=["mk_probe"])
        doomed_id = a.agents.retrieve("doomed").id
        b = children.serve(db, "b")
        b.wait_for("ready")
        assert ask(b, "send", agent="doomed", text="hello")["reply"]
        assert "probe version v1" in ask(b, "send", agent="toolie", text="/call mk_probe {}")["reply"]
        assert ask(b, "search", agent="toolie", query="zebras stripes", k=1)["reply"] == []  # B now caches vectors
        a.agents.delete("doomed")
        a.tools.upsert_from_function(probe_v2, name="mk_probe")
        a.agents.passages.create("toolie", "Zebras have black and white stripes.")
        gone = ask(b, "send", agent="doomed", text="are you there?")
        assert gone.get("error") == "AgentNotFoundError", gone
        assert "probe version v2" in ask(b, "send", agent="toolie", text="/call mk_probe {}")["reply"]
        assert ask(b, "search", agent="toolie", query="zebras stripes", k=1)["reply"] == [
            "Zebras have black and white stripes."]
    assert query(str(db), "SELECT count(*) FROM messages WHERE agent_id = ?", doomed_id)[0][0] == 0
    if "://" not in str(db):  # a SQLite file (a PostgreSQL server keeps its own integrity)
        assert query(str(db), "PRAGMA integrity_check")[0][0] == "ok"


def test_a_turn_that_waits_past_lease_timeout_gets_agent_busy_naming_the_holder(tmp_path, db_path, children):
    db = db_path
    make_store(db, ["a0"])
    holder = children.serve(db, "holder")
    holder.wait_for("ready")
    assert ask(holder, "delay", spec=MODEL, hang_at=1)["reply"] == "installed"
    holder.write(json.dumps({"op": "send", "agent": "a0", "text": "hold it"}))
    holder.wait_for("in_model")  # the holder's turn is inside its model call, under a0's lease (renewed: alive)
    waiter = children.serve(db, "waiter", lease_timeout=0.5)
    waiter.wait_for("ready")
    busy = ask(waiter, "send", agent="a0", text="me too")
    assert busy.get("error") == "AgentBusyError", busy
    assert busy["holder"]["pid"] == holder.proc.pid and busy["holder"]["host"] == os.uname().nodename
    assert str(holder.proc.pid) in busy["message"] and busy["holder"]["since"]
    # Nothing of the refused turn was stored; the holder's turn is still running (nothing committed yet).
    assert query(str(db), "SELECT count(*) FROM messages")[0][0] == 0
