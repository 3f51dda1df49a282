"""Messages indexed for full-text search in batches, off the step's commit (SQLite, migration m0011).

What is checked, on real store files: a message a step committed is found by recall search (text and hybrid
modes) at once although nothing indexed it yet; steps index their backlog in batches on their own, and the
index then holds exactly the rows under the watermark, each once (FTS5's own row total, which counts a row
indexed twice, equals the messages'); deleting an agent and updating a message leave no stale hit, indexed or
not yet; a rowid SQLite reuses after the newest messages are deleted is indexed; two processes writing and
searching one store find every message exactly once; SIGKILLs mid-catch-up leave index and watermark
consistent; a store of the m0010 schema keeps finding its old messages and the new ones; a catch-up that
fails fails the text search with a StoreError naming the way out, and the next one indexes the rows.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from store_query import insert_old_agent, old_store

import letta_nb
from letta_nb.errors import StoreError
from letta_nb.schemas import Message
from letta_nb.store.backend import StepWrite
from letta_nb.store.ids import new_id
from letta_nb.store.sqlite import fulltext as fulltext_sqlite
from letta_nb.store.sqlite.driver import connect_raw, sqlite_module
from letta_nb.store.sqlite.fulltext import BATCH

pytestmark = pytest.mark.sqlite_only("inspects SQLite's FTS5 index and its watermark")


def _varint(blob: bytes) -> int:
    """The first SQLite varint of ``blob`` (FTS5's averages record starts with its total row count)."""
    value = 0
    for i, byte in enumerate(blob[:9]):
        if i == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return value


def _index(path: Any) -> dict[str, Any]:
    """What the index holds against the messages, read on a fresh connection (as another process sees it)."""
    conn = connect_raw(str(path), vec=False)
    try:
        upto = conn.execute("SELECT upto FROM fulltext_watermark").fetchone()[0]
        rowids = [r[0] for r in conn.execute("SELECT rowid FROM messages ORDER BY rowid")]
        indexed = [r[0] for r in conn.execute("SELECT id FROM messages_fts_docsize ORDER BY id")]
        averages = conn.execute("SELECT block FROM messages_fts_data WHERE id = 1").fetchone()
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")  # raises if corrupt
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    return {"upto": upto, "rowids": rowids, "indexed": indexed,
            "total": _varint(averages[0]) if averages else 0}  # rows FTS5 counts as indexed (twice: counted twice)


def _consistent(path: Any) -> dict[str, Any]:
    """The invariant: the indexed rows are exactly the messages at or under the watermark, each once."""
    state = _index(path)
    assert state["indexed"] == [r for r in state["rowids"] if r <= state["upto"]], state
    assert state["total"] == len(state["indexed"]), state
    return state


def _matches(path: Any, word: str) -> int:
    conn = connect_raw(str(path), vec=False)
    try:
        return int(conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?",
                                (f'"{word}"',)).fetchone()[0])
    finally:
        conn.close()


def _containing(path: Any, word: str) -> int:
    """Messages whose indexed text (content, tool calls) contains ``word`` (ASCII: LIKE ignores its case)."""
    conn = connect_raw(str(path), vec=False)
    try:
        return int(conn.execute("SELECT count(*) FROM messages WHERE coalesce(content, '') || ' ' || "
                                "coalesce(tool_calls, '') LIKE ?", (f"%{word}%",)).fetchone()[0])
    finally:
        conn.close()


def _search(client: letta_nb.Client, agent_id: str, query: str, **kw: Any) -> list[Message]:
    rt = client._runtime
    agent = client._thread.run(rt.store.load_agent(agent_id))
    hits: list[Message] = client._thread.run(rt.archival.search_messages(agent, query, **kw))
    return hits


def _say(agent_id: str, seq: int, text: str, role: str = "user") -> Message:
    return Message(id=new_id("message"), agent_id=agent_id, seq=seq, role=role, content=text,
                   created_at=dt.datetime.now(dt.timezone.utc))


def _write(client: letta_nb.Client, agent_id: str, texts: list[str]) -> None:
    """Messages committed through the step writer (a step without a model), after the agent's last."""
    rt = client._runtime

    async def go() -> None:
        seq = (await rt.store.load_agent(agent_id)).last_seq
        messages = [_say(agent_id, seq + 1 + i, t) for i, t in enumerate(texts)]
        await rt.store.submit_step(StepWrite(agent_id, messages=messages, last_seq=seq + len(texts)))

    client._thread.run(go())


def test_a_committed_message_is_found_at_once_by_text_and_hybrid_search(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        agent = client.agents.create("a", model="offline", embedding="hash")
        client.agents.messages.create(agent.id, "My zebrafish is called Wanda.")
        mine = [m for m in client.agents.messages.list(agent.id) if m.role == "user"]
        assert _matches(path, "wanda") == 0 and _index(path)["upto"] < max(_index(path)["rowids"])  # not yet
        for mode in ("text", "hybrid"):
            hits = _search(client, agent.id, "What is my zebrafish called?", search_mode=mode, roles=["user"])
            assert hits and hits[0].id == mine[-1].id, mode
        assert _matches(path, "wanda") == _containing(path, "wanda") > 0  # the reply quotes it too
        state = _consistent(path)
        assert state["upto"] == max(state["rowids"])  # the search indexed every committed message


def test_steps_index_their_backlog_in_batches_each_message_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        agent = client.agents.create("a", model="offline", embedding="hash")
        turns = 120  # a few messages a turn: past BATCH (256) messages, with no search meanwhile
        for i in range(turns):
            client.agents.messages.create(agent.id, f"Please keep the code w{i:04d}x for later.")
        state = _consistent(path)
        assert len(state["rowids"]) > BATCH
        assert 0 < state["upto"] < max(state["rowids"])  # steps indexed a batch by themselves, not the tail
        assert max(state["rowids"]) - state["upto"] <= BATCH + 10  # the backlog stays about one batch
        for i in (0, 57, turns - 1):  # a word only one user message has: one hit, exactly
            hits = _search(client, agent.id, f"w{i:04d}x", search_mode="text", roles=["user"], limit=5)
            assert [h.content for h in hits] == [f"Please keep the code w{i:04d}x for later."]
        state = _consistent(path)
        assert state["indexed"] == state["rowids"]  # the search indexed the rest, each once


def test_deleting_an_agent_leaves_no_stale_hit_indexed_or_not(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        a = client.agents.create("a", model="offline", embedding="hash")
        b = client.agents.create("b", model="offline", embedding="hash")
        _write(client, a.id, [f"alpha indexed {i} walrus" for i in range(5)])
        _write(client, b.id, [f"beta indexed {i} walrus" for i in range(5)])
        assert len(_search(client, b.id, "walrus", search_mode="text", limit=50)) == 5  # all indexed now
        _write(client, a.id, [f"alpha pending {i} walrus" for i in range(4)])  # not indexed yet
        _write(client, b.id, [f"beta pending {i} walrus" for i in range(3)])
        client.agents.delete(a.id)
        assert _matches(path, "alpha") == 0  # the indexed rows left the index with their agent
        _consistent(path)
        hits = _search(client, b.id, "walrus alpha", search_mode="text", limit=50)
        assert sorted(h.content for h in hits) == sorted([f"beta indexed {i} walrus" for i in range(5)]
                                                         + [f"beta pending {i} walrus" for i in range(3)])
        assert _matches(path, "alpha") == 0 and _matches(path, "walrus") == 8
        state = _consistent(path)
        assert state["indexed"] == state["rowids"]


def test_an_updated_message_is_found_by_its_new_words_only(tmp_path: Path) -> None:
    # Nothing in letta_nb updates a message; a user's sqlite3 may. Indexed or not yet, the new text counts.
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        a = client.agents.create("a", model="offline", embedding="hash")
        _write(client, a.id, ["the old heron text"])
        assert len(_search(client, a.id, "heron", search_mode="text")) == 1  # indexed
        _write(client, a.id, ["the old pelican text"])  # not indexed yet
        conn = connect_raw(str(path), vec=False)
        try:
            conn.execute("UPDATE messages SET content = 'the new egret text' WHERE content LIKE '%heron%'")
            conn.execute("UPDATE messages SET content = 'the new ibis text' WHERE content LIKE '%pelican%'")
        finally:
            conn.close()
        assert [m.content for m in _search(client, a.id, "egret ibis", search_mode="text")] != []
        assert sorted(m.content for m in _search(client, a.id, "egret ibis heron pelican", search_mode="text")) == [
            "the new egret text", "the new ibis text"]
        assert _matches(path, "heron") == 0 and _matches(path, "pelican") == 0
        state = _consistent(path)
        assert state["indexed"] == state["rowids"]


def test_a_rowid_reused_after_the_newest_messages_are_deleted_is_indexed(tmp_path: Path) -> None:
    # SQLite gives a new row max(rowid) + 1 (no AUTOINCREMENT on messages): once the newest rows are deleted,
    # a new message takes a rowid at or under the old watermark. The delete trigger lowers the mark to match.
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        a = client.agents.create("a", model="offline", embedding="hash")
        b = client.agents.create("b", model="offline", embedding="hash")
        _write(client, a.id, [f"first message {i}" for i in range(3)])
        _write(client, b.id, [f"newest message {i}" for i in range(4)])  # the largest rowids
        _search(client, a.id, "message", search_mode="text")
        before = _consistent(path)
        assert before["upto"] == max(before["rowids"])
        client.agents.delete(b.id)
        after = _consistent(path)
        assert after["upto"] == max(after["rowids"]) < before["upto"]  # lowered with the deletes
        _write(client, a.id, ["a reused narwhal rowid"])
        reused = _index(path)["rowids"][-1]
        assert reused <= before["upto"]  # the case is real: the new row took a rowid that had been indexed
        assert [m.content for m in _search(client, a.id, "narwhal", search_mode="text")] == ["a reused narwhal rowid"]
        state = _consistent(path)
        assert state["indexed"] == state["rowids"]


def test_a_catch_up_that_fails_fails_the_text_search_with_the_fix(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.db"
    with letta_nb.connect(path) as client:
        a = client.agents.create("a", model="offline", embedding="hash")
        _write(client, a.id, ["an unindexed okapi"])

        def broken(cursor: Any) -> int:
            raise sqlite_module().OperationalError("disk I/O error")

        monkeypatch.setattr(fulltext_sqlite, "catch_up", broken)
        with pytest.raises(StoreError, match="disk I/O error.*search_mode='vector'"):
            _search(client, a.id, "okapi", search_mode="text")
        assert [m.content for m in _search(client, a.id, "okapi", search_mode="vector")] == ["an unindexed okapi"]
        monkeypatch.undo()
        assert [m.content for m in _search(client, a.id, "okapi", search_mode="text")] == ["an unindexed okapi"]


WRITER = textwrap.dedent('''
    import sys
    import letta_nb

    path, tag, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with letta_nb.connect(path) as client:
        agent = client.agents.create(tag, model="offline", embedding="hash")
        rt = client._runtime
        for i in range(turns):
            client.agents.messages.create(agent.id, f"note {tag}w{i:04d}x from {tag}")
            if i % 10 == 9:  # search one's own words meanwhile: the other process is writing too
                state = client._thread.run(rt.store.load_agent(agent.id))
                hits = client._thread.run(rt.archival.search_messages(
                    state, f"{tag}w{i - 5:04d}x", search_mode="text", roles=["user"]))
                assert [h.content for h in hits] == [f"note {tag}w{i - 5:04d}x from {tag}"], hits
        print("done", flush=True)
''')


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow
def test_two_processes_writing_and_searching_find_every_message_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    letta_nb.connect(path).close()  # migrated once, before the two open it
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    turns = 90
    children = [subprocess.Popen([sys.executable, str(script), str(path), tag, str(turns)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_child_env()) for tag in ("p", "q")]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0 and out.strip() == "done", err[-3000:]
    with letta_nb.connect(path) as client:
        for tag in ("p", "q"):
            agent = client.agents.retrieve(tag)
            for i in range(turns):
                hits = _search(client, agent.id, f"{tag}w{i:04d}x", search_mode="text", roles=["user"])
                assert [h.content for h in hits] == [f"note {tag}w{i:04d}x from {tag}"]
    state = _consistent(path)
    assert state["indexed"] == state["rowids"] and len(state["rowids"]) > 2 * BATCH


KILLED = textwrap.dedent('''
    import datetime as dt
    import sys
    import letta_nb
    from letta_nb.schemas import Message
    from letta_nb.store.backend import StepWrite
    from letta_nb.store.ids import new_id

    client = letta_nb.connect(sys.argv[1])
    if "k" not in [a.name for a in client.agents.list()]:
        client.agents.create("k", model="offline", embedding="hash")
    agent_id = client.agents.retrieve("k").id
    rt = client._runtime

    async def step(seq, n):
        now = dt.datetime.now(dt.timezone.utc)
        messages = [Message(id=new_id("message"), agent_id=agent_id, seq=seq + j + 1, role="user",
                            content=f"kill test k{seq + j + 1:06d}x", created_at=now) for j in range(n)]
        await rt.store.submit_step(StepWrite(agent_id, messages=messages, last_seq=seq + n))
        await rt.store.catch_up_fulltext()  # its own transaction, the longest part of a round

    seq = client._thread.run(rt.store.load_agent(agent_id)).last_seq
    while True:  # a write of 400 (it may carry a batch catch-up too), then the catch-up of the rest
        client._thread.run(step(seq, 400))
        seq += 400
        sys.stdout.write(f"{seq}\\n")
        sys.stdout.flush()
''')


@pytest.mark.slow
def test_sigkill_mid_catch_up_leaves_index_and_watermark_consistent(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_NB_LEASE_TTL", "3")  # a killed child never releases its lease
    path = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(KILLED)
    for round_no, (lines, delay) in enumerate(((2, 0.0), (3, 0.015), (4, 0.03), (5, 0.05))):
        child = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True,
                                 env=_child_env())
        assert child.stdout is not None
        for _ in range(lines):  # this many committed rounds, then a kill somewhere in the next one
            assert child.stdout.readline(), f"round {round_no}: the child died early"
        time.sleep(delay)  # varies where the kill lands (building rows, writing, indexing); any point must do
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = _consistent(path)  # integrity checks pass, and the index is exactly the rows under the mark
        assert state["upto"] > 0, round_no
    with letta_nb.connect(path) as client:
        agent = client.agents.retrieve("k")
        last = _index(path)["rowids"]
        for seq in (1, len(last) // 2, len(last)):
            hits = _search(client, agent.id, f"k{seq:06d}x", search_mode="text")
            assert [h.content for h in hits] == [f"kill test k{seq:06d}x"]
    state = _consistent(path)
    assert state["indexed"] == state["rowids"]


def _m0010_store(path: Path) -> None:
    """A store at the schema before m0011 (messages indexed by m0009's insert trigger), with messages in it."""
    old_store(path, "m0011_deferred_message_fulltext", _fill_m0010_store)


def _fill_m0010_store(conn: Any) -> None:
    now = "2024-05-01 12:00:00.000000"
    insert_old_agent(conn, 3, now)
    for seq in (1, 2, 3):
        conn.exec_driver_sql(
            "INSERT INTO messages (id, agent_id, seq, role, content, created_at) VALUES (?, 'agent-old', ?, "
            "'user', ?, ?)", (f"message-old{seq}", seq, f"My lighthouse number {seq} is painted red.", now))


def test_a_store_of_the_m0010_schema_keeps_finding_old_and_new_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _m0010_store(path)
    assert _matches(path, "lighthouse") == 3  # m0009's trigger indexed them
    with letta_nb.connect(path) as client:
        assert client._runtime.store.applied_migrations == ["m0011_deferred_message_fulltext"]
        state = _consistent(path)
        assert state["upto"] == max(state["rowids"]) and len(state["indexed"]) == 3
        _write(client, "agent-old", ["A new lighthouse was built."])
        assert _matches(path, "new") == 0  # no insert trigger any more
        hits = _search(client, "agent-old", "lighthouse", search_mode="text", limit=10)
        old = {"message-old1", "message-old2", "message-old3"}
        assert len(hits) == 4 and old < {h.id for h in hits}
        assert "A new lighthouse was built." in [h.content for h in hits]
    conn = connect_raw(str(path), vec=False)
    try:
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                               "AND tbl_name = 'messages'")}
    finally:
        conn.close()
    assert triggers == {"messages_fts_ad", "messages_fts_au"}
    state = _consistent(path)
    assert state["indexed"] == state["rowids"]
