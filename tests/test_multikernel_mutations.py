"""Many kernels, one store: changes that are not turns take the lease too, and a turn that loses its lease
mid-way recovers and is stored whole (issue 11, the two deviations closed).

Real processes on one SQLite file (tests/multikernel_child.py), checked against the file itself. A lease is
made to expire mid-turn by a model call that announces itself and then waits until another process holds the
agent's lease (``lose_lease``): the test SIGSTOPs that process, lets the other one take the expired lease and
finish a turn, and SIGCONTs it; the paused turn's next commit is then refused, it takes the lease again and
re-runs the refused step.
"""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from store_query import query
from test_multikernel import MODEL, ask, children, make_store  # noqa: F401  (children: the fixture)

import letta_nb
from letta_nb.bench.multikernel import Child, audit
from letta_nb.runtime.agent_loop import MAX_RECOVERIES

pytestmark = pytest.mark.slow

APPEND = '/call core_memory_append {"label": "human", "content": "%s"}'  # step 1 edits memory, step 2 replies


def rows(db: Path, agent: str = "a0") -> list[tuple[int, str, str, str]]:
    """``(seq, role, content, step_id)`` of the agent's messages, in ``seq`` order."""
    return query(str(db), "SELECT m.seq, m.role, m.content, m.step_id FROM messages m JOIN agents a "
                          "ON a.id = m.agent_id WHERE a.name = ? ORDER BY m.seq", agent)


def turn_order(db: Path, agent: str = "a0") -> list[tuple[str, list[int]]]:
    """The agent's messages in ``seq`` order as consecutive runs of one turn: ``(run_id, step indexes)``."""
    out: list[tuple[str, list[int]]] = []
    for run_id, index in query(str(db), "SELECT s.run_id, s.step_index FROM messages m JOIN steps s ON "
                                        "s.id = m.step_id JOIN agents a ON a.id = m.agent_id WHERE a.name = ? "
                                        "ORDER BY m.seq", agent):
        if not out or out[-1][0] != run_id:
            out.append((run_id, []))
        if index not in out[-1][1]:
            out[-1][1].append(index)
    return out


def assert_whole(db: Path, turns: dict[int, list[str]], agent: str = "a0") -> dict[str, Any]:
    """Every user message of ``turns`` (process -> its texts, in order) once, in order; contiguous seq; whole
    steps; integrity."""
    report = audit(str(db), {agent: turns})
    assert (report["lost"], report["duplicated"], report["order_violations"]) == (0, 0, 0), report
    assert report["seq_errors"] == [] and report["half_steps"] == [] and report["integrity"] == "ok", report
    return report


def pause_until_taken(paused: Child, other: Child, text: str, n: int) -> str:
    """``paused`` announced model call ``n`` (under the agent's lease): stop it, let ``other`` take the
    expired lease and finish a turn, resume it. Returns ``other``'s reply."""
    assert paused.wait_for("in_model")["in_model"] == n
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        reply = ask(other, "send", agent="a0", text=text)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    assert reply.get("reply"), reply
    return reply["reply"]


def lease_loss_pair(tmp_path: Path, children, calls: list[int]) -> tuple[Path, Child, Child]:  # noqa: F811
    """A store with agent a0; process A (lease_ttl 1 s) whose model calls ``calls`` wait until B took the
    lease; process B."""
    db = tmp_path / "s.db"
    make_store(db, ["a0"])
    a, b = children.serve(db, "a", lease_ttl=1.0), children.serve(db, "b")
    a.wait_for("ready")
    b.wait_for("ready")
    assert ask(a, "lose_lease", spec=MODEL, agent="a0", calls=calls)["reply"] == "installed"
    return db, a, b


def test_a_lease_lost_between_step_1_and_step_2_the_turn_recovers_and_is_stored_whole(tmp_path, children):  # noqa: F811
    db, a, b = lease_loss_pair(tmp_path, children, calls=[2])
    a.write(json.dumps({"op": "send", "agent": "a0", "text": APPEND % "a fact"}))
    pause_until_taken(a, b, "B speaks meanwhile", n=2)  # A's step 1 committed; its step 2 lost the lease
    reply = a.wait_for("reply")
    assert reply.get("error") is None and reply["reply"], reply  # the caller got its response, no exception
    assert_whole(db, {0: [APPEND % "a fact"], 1: ["B speaks meanwhile"]})
    # A's step 1 (user, call, result), then B's whole turn, then A's step 2, stored once (its refused run is not).
    (a_run, first), (b_run, b_steps), (again, second) = turn_order(db)
    assert (again, first, second) == (a_run, [0], [1]) and b_run != a_run and b_steps == [0]
    assert [r[1] for r in rows(db)][:3] == ["user", "assistant", "tool"]
    assert query(str(db), "SELECT count(*) FROM steps WHERE run_id = ?", a_run)[0][0] == 2
    block = query(str(db), "SELECT value FROM blocks WHERE label = 'human'")[0][0]
    assert block.count("a fact") == 1
    events = ask(a, "leases", agent="a0")["reply"]
    assert events.get("refused_commit") == 1 and events.get("recovered") == 1, events
    assert ask(b, "leases", agent="a0")["reply"].get("took_expired") == 1


def test_a_lease_lost_in_the_first_step_is_recovered_and_the_turn_follows_the_other_process(tmp_path, children):  # noqa: F811
    db, a, b = lease_loss_pair(tmp_path, children, calls=[1])
    a.write(json.dumps({"op": "send", "agent": "a0", "text": "A asks first"}))
    pause_until_taken(a, b, "B goes first after all", n=1)
    reply = a.wait_for("reply")
    assert reply.get("error") is None and reply["reply"], reply
    assert_whole(db, {0: ["A asks first"], 1: ["B goes first after all"]})
    users = [r[2] for r in rows(db) if r[1] == "user"]
    assert users == ["B goes first after all", "A asks first"]  # A's refused first step left nothing behind
    assert len(turn_order(db)) == 2  # B's turn, then A's, each whole and contiguous
    assert ask(a, "leases", agent="a0")["reply"].get("recovered") == 1


def test_a_turn_refused_more_than_the_bound_raises_with_only_its_earlier_steps_stored(tmp_path, children):  # noqa: F811
    """The bound: after MAX_RECOVERIES re-runs of a refused step, StaleCommitError. Defined: the steps the turn
    committed before that step stay stored (whole: here step 1, with the user message and the memory edit);
    nothing of the refused step is stored, from any of its runs."""
    refusals = MAX_RECOVERIES + 1
    db, a, b = lease_loss_pair(tmp_path, children, calls=list(range(2, 2 + refusals)))
    a.write(json.dumps({"op": "send", "agent": "a0", "text": APPEND % "kept fact"}))
    for n in range(2, 2 + refusals):  # step 2 and each of its re-runs loses the lease to a turn of B
        pause_until_taken(a, b, f"B turn {n}", n=n)
    reply = a.wait_for("reply")
    assert reply.get("error") == "StaleCommitError", reply
    b_texts = [f"B turn {n}" for n in range(2, 2 + refusals)]
    assert_whole(db, {0: [APPEND % "kept fact"], 1: b_texts})
    order = turn_order(db)
    a_run = order[0][0]
    assert order[0][1] == [0] and all(run != a_run for run, _ in order[1:])  # A's step 1, then B's turns only
    assert query(str(db), "SELECT count(*) FROM steps WHERE run_id = ?", a_run)[0][0] == 1
    assert [r[1] for r in rows(db)][:3] == ["user", "assistant", "tool"]  # step 1 whole: nothing else of A
    assert query(str(db), "SELECT value FROM blocks WHERE label = 'human'")[0][0].count("kept fact") == 1
    events = ask(a, "leases", agent="a0")["reply"]
    assert events.get("refused_commit") == refusals and events.get("recovered") == MAX_RECOVERIES, events
    # The agent is usable at once: A's next turn reads the store as it is and lands after B's turns.
    assert ask(a, "send", agent="a0", text="A again")["reply"]
    assert [r[2] for r in rows(db) if r[1] == "user"][-1] == "A again"


def test_passages_and_uploads_in_one_process_take_the_lease_beside_another_process_turns(tmp_path, children):  # noqa: F811
    db, docs = tmp_path / "s.db", tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n" + f"Paragraph {i} about leases and uploads. " * 40)
    spec = "offline?latency_ms=20"
    make_store(db, ["a0"], model=spec)
    a, b = children.serve(db, "a"), children.serve(db, "b")
    a.wait_for("ready")
    b.wait_for("ready")
    # 1. B's commit waits on A's lease: A's turn is inside its model call, which returns only once B queues
    # for the lease. (The model is wrapped before A loads a0: a session keeps the model it was made with.)
    assert ask(a, "lose_lease", spec=spec, agent="a0", calls=[1], until="queued")["reply"] == "installed"
    assert ask(a, "note_tool", agent="a0")["reply"] == "attached"
    a.write(json.dumps({"op": "send", "agent": "a0", "text": "first turn"}))
    a.wait_for("in_model")
    waited = ask(b, "passages", agent="a0", texts=["B passage 0"])
    assert waited.get("reply"), waited
    assert a.wait_for("reply")["reply"]
    assert ask(b, "leases", agent="a0")["reply"].get("waited", 0) >= 1  # B queued behind A's turn
    # 2. Everything at once: A's turns insert passages (the base tool, and a user tool going through the
    # client into its own agent, joining its turn's lease); B uploads files and creates passages.
    a_texts = []
    for i in range(4):
        a_texts += [f'/call archival_memory_insert {{"content": "A archival {i}"}}',
                    f'/call file_note {{"agent": "a0", "text": "A note {i}"}}']
    a.write(json.dumps({"op": "turns", "agent": "a0", "texts": a_texts}))
    b.write(json.dumps({"op": "upload", "agent": "a0", "path": str(docs)}))
    b_texts = [f"B passage {i}" for i in range(1, 9)]
    b.write(json.dumps({"op": "passages", "agent": "a0", "texts": b_texts}))
    uploaded = b.wait_for("reply")
    assert uploaded.get("error") is None and {s for s, _ in uploaded["reply"].values()} == {"added"}, uploaded
    assert b.wait_for("reply").get("reply"), "B's passages"
    turns = a.wait_for("reply")
    assert turns.get("error") is None and len(turns["reply"]) == len(a_texts), turns  # no turn failed
    assert all("filed: A note" in t or "A note" in t or "archival" in t.lower() for t in turns["reply"])
    # Every row once: A's inserts, B's passages, each uploaded file's passages and its record.
    texts = collections.Counter(r[0] for r in query(str(db), "SELECT text FROM passages WHERE file_id IS NULL"))
    wanted = [f"A archival {i}" for i in range(4)] + [f"A note {i}" for i in range(4)] + ["B passage 0", *b_texts]
    assert texts == collections.Counter(wanted)
    chunks = sum(n for _, n in uploaded["reply"].values())
    assert query(str(db), "SELECT count(*) FROM passages WHERE file_id IS NOT NULL")[0][0] == chunks > 0
    assert query(str(db), "SELECT count(*) FROM files")[0][0] == 6
    assert_whole(db, {0: ["first turn", *a_texts]})
    a_events = ask(a, "leases", agent="a0")["reply"]
    assert a_events.get("joined", 0) == 4  # file_note ran inside A's turns: joined, never queued behind itself
    assert a_events.get("refused_commit", 0) == 0


def test_a_tool_filing_into_its_own_agent_joins_the_turn_but_a_block_edit_is_still_refused(tmp_path):
    with letta_nb.connect(tmp_path / "s.db") as client:
        client.agents.create("solo", model="offline")

        def note_here(text: str) -> str:
            """File a note in this agent's archival memory.

            Args:
                text: The note.
            """
            client.agents.passages.create("solo", text)
            return "filed"

        def edit_here(text: str) -> str:
            """Edit this agent's human block.

            Args:
                text: The new value.
            """
            client.agents.blocks.update("solo", "human", value=text)
            return "edited"

        for tool in (note_here, edit_here):
            client.tools.upsert_from_function(tool)
            client.agents.tools.attach("solo", tool.__name__)
        client.agents.messages.create("solo", '/call note_here {"text": "from inside the turn"}')
        assert [p.text for p in client.agents.passages.list("solo")] == ["from inside the turn"]
        r = client.agents.messages.create("solo", '/call edit_here {"text": "Name: Eve"}')
        tool_results = [m for m in r.messages if m.role == "tool" and m.name == "edit_here"]
        assert tool_results[0].status == "error" and "ReentrantLockError" in tool_results[0].content
        assert client.agents.blocks.retrieve("solo", "human").value != "Name: Eve"
        events = letta_nb.probes.leases(client)["event"].tolist()
        assert events.count("joined") == 1
