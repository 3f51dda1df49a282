"""A store survives SIGKILL at any moment: after a crash every step is all there or absent.

The first test runs a real child process that drives two agents through tool calls and memory edits
and kills it with SIGKILL three times at different moments, reopening the same store each time and
checking what was committed against the invariants the agent loop and step writer promise (see their
module docstrings). The second test checks the writer-level half of that promise directly: a step
write that violates a constraint leaves no row behind, and does not take down the writes it shared a
group commit with.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from store_query import query

import letta_nb
from letta_nb.schemas import Message
from letta_nb.store.backend import StepWrite
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.records import PassageRecord, StepRecord
from letta_nb.store.sqlite.driver import connect_raw, sqlite_module
from letta_nb.store.store import Store

pytestmark = pytest.mark.slow

AGENTS = ("ada", "bob")
NAME_LINE = re.compile(r"^Name: Ada \d+$")

# The child: two threads, one per agent, sending forever through the blocking client; a line on stdout
# after each completed send. One agent's model takes 30 ms per call, so a kill also lands between the
# steps of a turn (its first step committed, its reply not), not only inside a step. slow_tool imports
# inside its body because a stored tool is re-created from its source alone (the parent calls it after
# reopening). It is a file, not ``-c``, so that source can be stored.
CHILD = textwrap.dedent(
    '''
    import itertools
    import sys
    import threading

    import letta_nb

    AGENTS = __AGENTS__

    def slow_tool() -> str:
        """Sleep a little, so that a kill often lands while a step is in flight."""
        import time

        time.sleep(0.05)
        return "slept"

    MESSAGES = (
        "/call slow_tool {{}}",
        "My name is Ada {n}.",
        '/call slow_tool {{}}\\n/call core_memory_append {{"label": "human", "content": "Name: Ada {n}"}}',
        "What is my name?",
    )

    def drive(client, name, first):
        for i in itertools.count():
            n = first + i
            client.agents.messages.create(name, MESSAGES[i % len(MESSAGES)].format(n=n))
            sys.stdout.write(f"{name} {n}\\n")  # one write: print() from two threads can interleave
            sys.stdout.flush()

    path, round_no = sys.argv[1], int(sys.argv[2])
    client = letta_nb.connect(path)
    client.tools.upsert_from_function(slow_tool)
    existing = {a.name for a in client.agents.list()}
    for name, model in zip(AGENTS, ("offline?latency_ms=30", "offline")):
        if name not in existing:
            client.agents.create(name, model=model, tools=["slow_tool"])
    threads = [
        threading.Thread(target=drive, args=(client, name, 1000 * round_no + 100 * k), daemon=True)
        for k, name in enumerate(AGENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    '''
).replace("__AGENTS__", repr(AGENTS))


# ---- running and killing the child -------------------------------------------------------------------


def start_child(script: Path, db: str, round_no: int, stderr_path: Path) -> subprocess.Popen:
    with open(stderr_path, "wb") as err:
        return subprocess.Popen(
            [sys.executable, str(script), db, str(round_no)], stdout=subprocess.PIPE, stderr=err, bufsize=0
        )


def wait_for_lines(proc: subprocess.Popen, count: int, stderr_path: Path, *, hang_guard_s: float = 120) -> list[str]:
    """Block until the child printed ``count`` lines (completed sends). The deadline only catches a hang."""
    deadline = time.monotonic() + hang_guard_s
    buf, lines = b"", []
    fd = proc.stdout.fileno()
    while len(lines) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"child completed only {len(lines)} sends; stderr:\n{stderr_path.read_text()}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait()
            stderr = stderr_path.read_text()
            pytest.fail(f"child exited ({proc.returncode}) after {len(lines)} sends; stderr:\n{stderr}")
        buf += chunk
        *complete, buf = buf.split(b"\n")
        lines += [line.decode() for line in complete]
    return lines


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL  # it was still running: killed, not crashed


# ---- checking what a crash left behind ---------------------------------------------------------------


class Row(NamedTuple):
    id: str
    seq: int
    step_id: str
    role: str
    tool_calls: list[dict]  # [{"id", "name", "arguments"}] on assistant messages
    tool_call_id: str | None
    status: str | None


def message_rows(db: str, agent_id: str) -> list[Row]:
    rows = query(
        db,
        "select id, seq, step_id, role, tool_calls, tool_call_id, status from messages where agent_id = ? order by seq",
        agent_id,
    )
    return [Row(*r[:4], json.loads(r[4]) if r[4] else [], *r[5:]) for r in rows]


def committed_human_value(messages: list[Row]) -> str:
    """What the human block must hold: the content of every core_memory_append that succeeded, in order,
    each line once."""
    status = {(m.step_id, m.tool_call_id): m.status for m in messages if m.role == "tool"}
    lines = []
    for m in messages:
        for call in m.tool_calls:
            args = json.loads(call["arguments"])
            appended = call["name"] == "core_memory_append" and args.get("label") == "human"
            # an append of a line the block already holds changes nothing (runtime/memory.py)
            if appended and status[(m.step_id, call["id"])] == "success" and args["content"] not in lines:
                lines.append(args["content"])
    return "\n".join(lines)


def assert_store_consistent(db: str) -> dict[str, int]:
    """Check every crash-consistency invariant; return each agent's message count."""
    steps = dict(query(db, "select id, n_messages from steps"))
    counts = {}
    for agent_id, name, last_seq in query(db, "select id, name, last_seq from agents"):
        messages = message_rows(db, agent_id)
        seqs = [m.seq for m in messages]
        assert len({m.id for m in messages}) == len(messages), f"{name}: duplicate message ids"
        assert seqs == list(range(1, len(seqs) + 1)), f"{name}: seqs not 1..n without gaps: {seqs}"
        assert last_seq == (seqs[-1] if seqs else 0), f"{name}: last_seq {last_seq} != max(seq)"

        by_step = collections.defaultdict(list)
        for m in messages:
            by_step[m.step_id].append(m)
        for step_id, rows in by_step.items():
            assert step_id in steps, f"{name}: messages {[r.seq for r in rows]} belong to no committed step"
            assert len(rows) == steps[step_id], f"{name}: step {step_id} has {len(rows)}/{steps[step_id]} messages"
            calls = sorted(c["id"] for r in rows for c in r.tool_calls)
            answers = sorted(r.tool_call_id for r in rows if r.role == "tool")
            assert calls == answers, f"{name}: step {step_id} calls {calls} vs tool results {answers}"

        (human,) = query(db, "select value from blocks where agent_id = ? and label = 'human'", agent_id)[0]
        assert human == committed_human_value(messages), f"{name}: human block disagrees with committed steps"
        assert all(NAME_LINE.match(line) for line in human.splitlines()), human
        counts[name] = len(messages)
    orphans = set(steps) - {sid for (sid,) in query(db, "select distinct step_id from messages")}
    assert not orphans, f"steps without their messages: {orphans}"
    return counts


def assert_usable(db: str) -> None:
    """Reopen through the public API and keep going: a stored tool call and a memory edit per agent."""
    with letta_nb.connect(db) as client:
        for name in AGENTS:
            before = client.agents.retrieve(name).last_seq
            response = client.agents.messages.create(name, "/call slow_tool {}")
            tool_results = [m for m in response.messages if m.role == "tool" and m.name == "slow_tool"]
            assert [(m.status, m.content) for m in tool_results] == [("success", "slept")]
            client.agents.messages.create(name, "My name is Ada 99999.")
            assert "Name: Ada 99999" in client.agents.blocks.retrieve(name, "human").value
            after = client.agents.messages.list(name)
            assert [m.seq for m in after[before:]] == list(range(before + 1, after[-1].seq + 1))


# ---- the tests -----------------------------------------------------------------------------------------


def test_sigkill_at_any_moment_leaves_whole_steps(tmp_path, monkeypatch):
    # A killed child never releases its lease: the next process waits out the TTL (30 s by default). A short
    # one, inherited by the children, keeps the rounds from waiting; heartbeats renew it (ttl/3) meanwhile.
    monkeypatch.setenv("LETTA_NB_LEASE_TTL", "1.5")
    db = str(tmp_path / "crash.db")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    seen: dict[str, int] = {}
    # Different pauses after the last completed send put the kill at different points of the next steps
    # (model call, slow tool, commit); the invariants must hold wherever it lands.
    for round_no, delay_s in enumerate((0.0, 0.031, 0.087), start=1):
        stderr_path = tmp_path / f"child{round_no}.err"
        proc = start_child(script, db, round_no, stderr_path)
        try:
            lines = wait_for_lines(proc, 6, stderr_path)
            time.sleep(delay_s)
        finally:
            kill(proc)
        assert {line.split()[0] for line in lines} <= set(AGENTS)

        counts = assert_store_consistent(db)
        assert set(counts) == set(AGENTS)
        for name, n in counts.items():
            assert n >= seen.get(name, 0), f"{name} lost committed messages"
        assert sum(counts.values()) > sum(seen.values())  # the child made progress this round
        assert_usable(db)
        seen = assert_store_consistent(db)


def _step_write(agent_id: str, seqs: list[int], *, human: str | None = None, passage: str | None = None) -> StepWrite:
    """A complete step as the agent loop would write it: messages, step row, agent pointer, optional edits."""
    step_id, now = new_id("step"), utcnow()
    messages = [
        Message(id=new_id("message"), agent_id=agent_id, seq=seq, step_id=step_id, role="user",
                content=f"message {seq}", created_at=now)
        for seq in seqs
    ]
    step = StepRecord(id=step_id, agent_id=agent_id, run_id=new_id("run"), step_index=0, model="offline",
                      n_messages=len(seqs), prompt_tokens=1, completion_tokens=1, llm_ms=0.0, tools_ms=0.0,
                      total_ms=0.0, stop_reason="end_turn", created_at=now)
    passages = [] if passage is None else [
        PassageRecord(id=new_id("passage"), agent_id=agent_id, text=passage, embedding=None, embedding_model=None,
                      tags=(), created_at=now)
    ]
    return StepWrite(agent_id=agent_id, messages=messages, block_values={} if human is None else {"human": human},
                     passages=passages, step=step, last_seq=max(seqs))


def _rows_of(db: str, agent_id: str) -> dict[str, object]:
    """Everything a step write can touch for one agent."""
    return {
        "seqs": [s for (s,) in query(db, "select seq from messages where agent_id = ? order by seq", agent_id)],
        "steps": {s for (s,) in query(db, "select id from steps where agent_id = ?", agent_id)},
        "passages": [t for (t,) in query(db, "select text from passages where agent_id = ?", agent_id)],
        "human": query(db, "select value from blocks where agent_id = ? and label = 'human'", agent_id)[0][0],
        "last_seq": query(db, "select last_seq from agents where id = ?", agent_id)[0][0],
    }


def test_a_failing_step_write_leaves_nothing_and_spares_its_group(tmp_path):
    db = str(tmp_path / "writer.db")
    with letta_nb.connect(db) as client:
        bad_id = client.agents.create("bad").id
        good_id = client.agents.create("good").id
    # Each "bad" write's second message reuses seq 1, which the unique (agent_id, seq) index rejects
    # after its first message (seq 2) was already inserted in the same transaction.
    writes = {
        "bad_setup": _step_write(bad_id, [1]),
        "good_first": _step_write(good_id, [1]),
        "bad_in_group": _step_write(bad_id, [2, 1], human="Name: Corrupted", passage="must not land"),
        "good_second": _step_write(good_id, [2, 3], human="Name: Good", passage="lands"),
        "bad_alone": _step_write(bad_id, [2, 1], human="Name: Corrupted too", passage="nor this"),
    }

    async def scenario() -> dict[str, object]:
        store = await Store.open(db)
        try:
            outcome = {"bad_setup": await store.submit_step(writes["bad_setup"])}
            # Hold the write lock while queueing, so nothing can commit before all three are queued:
            # "bad_in_group" then shares a group commit with at least one valid write.
            lock = connect_raw(db, vec=False)
            try:
                lock.execute("BEGIN IMMEDIATE")
                group = {k: store.submit_step(writes[k]) for k in ("good_first", "bad_in_group", "good_second")}
                lock.execute("ROLLBACK")
            finally:
                lock.close()
            outcome.update(zip(group, await asyncio.gather(*group.values(), return_exceptions=True), strict=True))
            # The same failure in a group of one (no isolation retry involved).
            outcome.update(zip(["bad_alone"], await asyncio.gather(store.submit_step(writes["bad_alone"]),
                                                                   return_exceptions=True), strict=True))
            return outcome
        finally:
            await store.close()

    outcome = asyncio.run(scenario())
    for key in ("bad_in_group", "bad_alone"):
        assert isinstance(outcome[key], sqlite_module().IntegrityError), (key, outcome[key])
        assert "UNIQUE" in str(outcome[key])
    assert all(isinstance(outcome[k], float) for k in ("bad_setup", "good_first", "good_second")), outcome

    assert _rows_of(db, bad_id) == {
        "seqs": [1], "steps": {writes["bad_setup"].step.id}, "passages": [], "human": "", "last_seq": 1,
    }
    assert _rows_of(db, good_id) == {
        "seqs": [1, 2, 3],
        "steps": {writes["good_first"].step.id, writes["good_second"].step.id},
        "passages": ["lands"],
        "human": "Name: Good",
        "last_seq": 3,
    }
