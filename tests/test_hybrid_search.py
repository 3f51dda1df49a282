"""Hybrid archival and recall search: full-text ranking fused with exact vector similarity.

What is checked: the three search modes and their filters (tags, time, roles) on the selected backend; the
full-text index follows every write in the row's own transaction (API inserts, deletes, a cascading agent
delete, file re-uploads, a SIGKILL mid-insert) and is built for rows written before migration m0009;
``conversation_search`` finds a fact stated 500 turns earlier by a paraphrase; reciprocal rank fusion.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from store_query import insert_old_agent, old_store, query

import letta_nb
from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.base_tools import ToolContext, conversation_search
from letta_nb.runtime.search import fuse
from letta_nb.schemas import Message
from letta_nb.store.backend import StepWrite
from letta_nb.store.ids import new_id
from letta_nb.store.sqlite.driver import connect_raw

FACTS = [
    "The MemGPT paper pages memory in and out of the context window like an operating system.",
    "Bananas are a yellow fruit rich in potassium.",
    "Virtual memory paging moves pages between disk and RAM.",
    "The quarterly report is due on the first Monday of June.",
]


def _sqlite_only(path: object) -> None:
    if "://" in str(path):
        pytest.skip("inspects SQLite's FTS5 tables")


def _fts_consistent(path: object) -> None:
    """FTS5's own check of passages_fts against the passages it indexes (raises if they disagree), and
    every passage findable by a word it contains."""
    conn = connect_raw(str(path), vec=False)
    try:
        conn.execute("INSERT INTO passages_fts (passages_fts, rank) VALUES ('integrity-check', 1)")
        indexed = conn.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'zebra'").fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM passages WHERE text LIKE '%zebra%'").fetchone()[0]
        assert indexed == stored
    finally:
        conn.close()


def test_modes_rank_by_words_meaning_and_both(client):
    client.agents.create(name="a", model="offline", embedding="hash")
    created = client.agents.passages.create("a", FACTS, tags=["notes"])
    assert [p.text for p in created] == FACTS  # one call, one commit, input order kept
    text = client.agents.passages.search("a", "paging", top_k=4, search_mode="text")
    # Stemming: "paging" matches "pages" as well as "paging"; nothing else shares a word.
    assert {p.text for p in text} == {FACTS[0], FACTS[2]}
    assert all(p.score is not None for p in text)
    vector = client.agents.passages.search("a", "paging", top_k=4, search_mode="vector")
    assert len(vector) == 4  # exact: every passage is scored
    hybrid = client.agents.passages.search("a", "paging", top_k=4)  # the default mode
    assert {p.text for p in hybrid[:2]} == {FACTS[0], FACTS[2]}
    assert {p.text for p in hybrid} == set(FACTS)
    with pytest.raises(InvalidArgumentError, match="search_mode='fuzzy'.*'hybrid', 'vector', 'text'"):
        client.agents.passages.search("a", "paging", search_mode="fuzzy")


@pytest.mark.parametrize("mode", ["text", "hybrid"])
def test_filters_hold_in_every_mode(client, mode):
    client.agents.create(name="a", model="offline", embedding="hash")
    client.agents.passages.create("a", "Paging one, tagged x.", tags=["x"])
    client.agents.passages.create("a", "Paging two, tagged x and y.", tags=["x", "y"])
    client.agents.create(name="b", model="offline", embedding="hash")
    client.agents.passages.create("b", "Paging of another agent.")

    def texts(**kw: object) -> set[str]:
        return {p.text for p in client.agents.passages.search("a", "paging", top_k=10, search_mode=mode, **kw)}

    assert texts() == {"Paging one, tagged x.", "Paging two, tagged x and y."}  # never agent b's
    assert texts(tags=["y"]) == {"Paging two, tagged x and y."}
    assert texts(tags=["x", "y"], tag_match_mode="all") == {"Paging two, tagged x and y."}
    assert texts(tags=["x", "z"]) == {"Paging one, tagged x.", "Paging two, tagged x and y."}
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert texts(start_datetime=future) == set()
    assert len(texts(end_datetime=future.isoformat())) == 2


def test_index_follows_inserts_deletes_and_cascades(client, db_path):
    _sqlite_only(db_path)
    client.agents.create(name="a", model="offline", embedding="hash")
    passages = client.agents.passages.create("a", [f"zebra number {i}" for i in range(5)])
    client.agents.passages.delete("a", passages[1].id)
    _fts_consistent(db_path)
    assert len(client.agents.passages.search("a", "zebra", top_k=10, search_mode="text")) == 4
    client.agents.delete("a")
    _fts_consistent(db_path)
    assert query(db_path, "SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'zebra'") == [(0,)]


def test_reupload_is_idempotent_for_the_index(client, db_path, tmp_path):
    _sqlite_only(db_path)
    client.agents.create(name="a", model="offline", embedding="hash")
    doc = tmp_path / "docs" / "zoo.md"
    doc.parent.mkdir()
    doc.write_text("\n\n".join(f"The zebra keeper number {i} feeds the animals at dawn." for i in range(30)))
    client.agents.files.upload("a", doc.parent)
    first = {p.id for p in client.agents.passages.search("a", "zebra keeper", top_k=50, search_mode="text")}
    client.agents.files.upload("a", doc.parent)  # unchanged: adds nothing
    doc.write_text(doc.read_text() + "\n\nA new zebra arrived.")
    client.agents.files.upload("a", doc.parent)  # changed: the file's passages are replaced whole
    _fts_consistent(db_path)
    found = {p.id for p in client.agents.passages.search("a", "zebra", top_k=50, search_mode="text")}
    stored = {p.id for p in client.agents.passages.list("a")}
    assert first and found == stored and not (first & found)


def _old_store(path: Path) -> None:
    """A store at the schema before m0009, with a passage and a message already in it."""
    old_store(path, "m0009_fulltext", _fill_old_store)


def _fill_old_store(conn: Any) -> None:
    now = "2024-05-01 12:00:00.000000"
    insert_old_agent(conn, 1, now)
    conn.exec_driver_sql(
        "INSERT INTO passages (id, agent_id, text, embedding, tags, created_at) "
        "VALUES ('passage-old', 'agent-old', 'The lighthouse keeper counts ships.', NULL, '[]', ?)", (now,))
    conn.exec_driver_sql(
        "INSERT INTO messages (id, agent_id, seq, role, content, created_at) "
        "VALUES ('message-old', 'agent-old', 1, 'user', 'My lighthouse is painted red.', ?)", (now,))


def test_migration_indexes_rows_written_before_it(tmp_path):
    path = tmp_path / "old.db"
    _old_store(path)
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'passages_fts'") == []
    client = letta_nb.connect(path)
    try:
        found = client.agents.passages.search("old", "lighthouse", search_mode="text")
        assert [p.id for p in found] == ["passage-old"]
        rt = client._runtime
        agent = client._thread.run(rt.store.load_agent("agent-old"))
        hits = client._thread.run(rt.archival.search_messages(agent, "lighthouse", search_mode="text"))
        assert [m.id for m in hits] == ["message-old"]
    finally:
        client.close()
    _fts_consistent(path)


def _say(rt, agent_id: str, seq: int, role: str, text: str) -> Message:
    return Message(id=new_id("message"), agent_id=agent_id, seq=seq, role=role, content=text,
                   created_at=dt.datetime.now(dt.timezone.utc))


FILLER = [
    "Let's plan the city council meeting agenda for the parks budget.",
    "Can you summarise the article on interest rates and inflation?",
    "I went running this morning along the river before work.",
    "What do you think of the new library building downtown?",
    "Remind me to water the tomatoes and the basil tonight.",
]


def test_conversation_search_finds_a_fact_500_turns_back_by_paraphrase(client):
    client.agents.create(name="a", model="offline", embedding="hash")
    rt = client._runtime
    agent = client.agents.retrieve("a")

    async def write_history() -> None:
        seq = agent.last_seq
        turns = [("My older sister Maria moved to Lisbon, where she works as a marine biologist.", "Noted!")]
        turns += [(FILLER[i % len(FILLER)] + f" (turn {i})", f"Sure, reply {i}.") for i in range(500)]
        for user, assistant in turns:
            messages = [_say(rt, agent.id, seq + 1, "user", user), _say(rt, agent.id, seq + 2, "assistant", assistant)]
            seq += 2
            await rt.store.submit_step(StepWrite(agent.id, messages=messages, last_seq=seq))

    client._thread.run(write_history())
    state = client._thread.run(rt.store.load_agent(agent.id))
    ctx = ToolContext(agent=state, memory=None, store=rt.store, archival=rt.archival)  # type: ignore[arg-type]
    for mode in ("hybrid", "text", "vector"):
        out = json.loads(client._thread.run(conversation_search("Which city is my sibling Maria living in?", ctx,
                                                                 limit=3, search_mode=mode)))
        assert "Lisbon" in out[0]["content"], (mode, out)
    only_assistant = json.loads(client._thread.run(conversation_search("Maria Lisbon sister", ctx,
                                                                       roles=["assistant"], limit=5)))
    assert only_assistant and all(m["role"] == "assistant" for m in only_assistant)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).isoformat()
    assert json.loads(client._thread.run(conversation_search("Maria", ctx, start_date=later))) == []


def test_fusion_rewards_agreement_and_keeps_either_ranking():
    fused = fuse([["a", "b", "c"], ["c", "d", "a"]], top_k=10)
    assert [k for k, _ in fused] == ["a", "c", "b", "d"]  # in both rankings first; ties keep first-seen order
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert fuse([["x"], []], top_k=1) == [("x", pytest.approx(1 / 61))]


CHILD = textwrap.dedent('''
    import sys
    import letta_nb

    client = letta_nb.connect(sys.argv[1])
    if "a" not in [a.name for a in client.agents.list()]:
        client.agents.create(name="a", model="offline", embedding="hash")
    for i in range(100000):
        if i % 2:
            client.agents.passages.create("a", [f"zebra batch {i} item {j}" for j in range(20)])
        else:
            client.agents.passages.create("a", f"zebra single {i}")
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
''')


@pytest.mark.slow
def test_sigkill_during_inserts_leaves_passages_vectors_and_index_consistent(tmp_path, monkeypatch):
    # A killed child never releases its lease: the next process waits out the TTL (30 s by default). A short
    # one, inherited by the children, keeps the rounds from waiting; heartbeats renew it (ttl/3) meanwhile.
    monkeypatch.setenv("LETTA_NB_LEASE_TTL", "3")
    path = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for round_no, lines in enumerate((7, 15, 31)):
        child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert child.stdout is not None
        for _ in range(lines):  # wait for this many committed inserts, then kill mid-stream
            assert child.stdout.readline(), f"round {round_no}: the child died early"
        child.send_signal(signal.SIGKILL)
        child.wait()
        _fts_consistent(path)
        rows, versions = query(path, "SELECT count(*) FROM passages")[0][0], query(
            path, "SELECT inserts - deletes FROM passage_versions")[0][0]
        assert rows == versions  # the vector copy's counters moved with the rows
    client = letta_nb.connect(path)
    try:
        stored = {p.id for p in client.agents.passages.list("a")}
        found = {p.id for p in client.agents.passages.search("a", "zebra", top_k=1000, search_mode="text")}
        by_vector = client.agents.passages.search("a", "zebra", top_k=1000, search_mode="vector")
        assert found == stored and {p.id for p in by_vector} == stored
    finally:
        client.close()
