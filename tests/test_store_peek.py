"""Looking at the store while a client has it open must never damage it (issue 16, item 1).

A user peeks with the stdlib ``sqlite3`` module (``pd.read_sql(sql, sqlite3.connect(path))`` then
``.close()``) while the client in the same process sends messages and uploads files. Where the runtime
opened the file through a second SQLite library (pysqlite3), each ``close()`` dropped the runtime's POSIX
locks (sqlite.org/howtocorrupt.html 2.2.1): uploads failed with "disk I/O error", committed messages
vanished and the file ended "malformed". These tests peek for real, then reopen the store and count
every row, check ``PRAGMA integrity_check``, and check that a write transaction keeps its lock against
another process however often the user peeks meanwhile. They also check the runtime never imports
pysqlite3 unless asked to, and that ``client.query`` (the safe way to look) reads but cannot write.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pandas as pd
import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError
from letta_nb.store.engine import WRITE

ROUNDS = 8


def peek(path: str, sql: str = "SELECT count(*) AS n FROM messages") -> pd.DataFrame:
    """What a user types in a cell: the stdlib module, a fresh connection, closed afterwards."""
    conn = sqlite3.connect(path)
    try:
        return pd.read_sql(sql, conn)
    finally:
        conn.close()


def stdlib_rows(path: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def note(tmp_path, i: int):
    path = tmp_path / f"note{i}.md"
    path.write_text(f"# Note {i}\n\nThe courier number {i} leaves from dock {i * 7}.\n\n"
                    f"## Details {i}\n\nPack {i} crates of apples and {i + 1} of pears.\n")
    return path


def test_peeking_with_the_stdlib_module_while_the_client_writes_loses_nothing(tmp_path):
    path = str(tmp_path / "peek.db")
    messages = chunks = 0
    with letta_nb.connect(path) as client:
        agent = client.agents.create("sam")
        messages = len(client.agents.messages.list(agent))
        for i in range(ROUNDS):
            r = client.agents.messages.create(agent, f"Remember that the courier {i} is called Ada{i}.")
            messages += len(r.messages)
            assert peek(path)["n"][0] == messages  # the peek sees every committed message
            report = client.agents.files.upload(agent, note(tmp_path, i), progress=False)
            assert report.errors == [] and report.chunks > 0, report.summary()
            chunks += report.chunks
            for _ in range(2):  # several peeks between writes, like a user re-running a cell
                assert peek(path, "SELECT count(*) AS n FROM passages WHERE file_id IS NOT NULL")["n"][0] == chunks
        assert len(client.agents.messages.list(agent)) == messages
        passages = client.agents.passages.list(agent)
        assert len(passages) > chunks  # the files' chunks and the facts the agent filed itself

    with letta_nb.connect(path) as client:  # everything committed is still there after reopening
        assert len(client.agents.messages.list("sam")) == messages
        assert client.agents.passages.list("sam") == passages
        assert len(client.agents.files.list("sam")) == ROUNDS
    assert stdlib_rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert stdlib_rows(path, "SELECT count(*) FROM messages") == [(messages,)]


LOCK_PROBE = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        print(e)
    else:
        conn.execute("INSERT INTO tools (id, name, description, source, json_schema, created_at, updated_at, "
                     "parallel_safe, sandbox, timeout) VALUES ('tool-intruder', 'intruder', '', '', '{}', "
                     "'2024-01-01', '2024-01-01', 0, 0, 1)")
        conn.execute("COMMIT")
        print("acquired")
    """
)


def other_process_tries_to_write(path: str) -> str:
    return subprocess.run([sys.executable, "-c", LOCK_PROBE, path], capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_peeks_during_a_write_transaction_keep_its_lock(tmp_path):
    """The client holds SQLite's write lock; the user peeks three times; another process must still
    find the database locked (the peeks' close() must not have released the client's lock)."""
    path = str(tmp_path / "locked.db")
    with letta_nb.connect(path) as client:
        agent = client.agents.create("sam")
        store = client.runtime.store
        inside, release = threading.Event(), threading.Event()

        async def hold_write_lock() -> None:
            async with store.engine.execution_options(**WRITE).begin() as conn:
                await conn.exec_driver_sql("UPDATE agents SET system = 'held' WHERE id = ?", (agent.id,))
                inside.set()
                await asyncio.to_thread(release.wait)

        job = client._thread.submit(hold_write_lock())
        try:
            assert inside.wait(60)
            for _ in range(3):
                peek(path, "SELECT count(*) AS n FROM agents")
            assert other_process_tries_to_write(path) == "database is locked"
        finally:
            release.set()
        job.result(60)
        assert client.query("SELECT system FROM agents WHERE id = ?", [agent.id])["system"].tolist() == ["held"]
        client.agents.messages.create(agent, "still fine?")
    assert stdlib_rows(path, "PRAGMA integrity_check") == [("ok",)]
    assert stdlib_rows(path, "SELECT count(*) FROM tools WHERE name = 'intruder'") == [(0,)]


FULL_SESSION = textwrap.dedent(
    """
    import sys, tempfile, pathlib
    import letta_nb
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "doc.md").write_text("# Doc\\n\\nThe lighthouse keeper is called Ines.\\n")
    with letta_nb.connect(tmp / "s.db") as client:
        agent = client.agents.create("sam")
        client.agents.messages.create(agent, "My name is Ada.")
        client.agents.passages.create(agent, "The vault opens at dawn.")
        client.agents.files.upload(agent, tmp / "doc.md", progress=False)
        assert client.agents.passages.search(agent, "who keeps the lighthouse", top_k=1)
        client.query("SELECT count(*) FROM messages")
        client.agents.delete(agent)
    print(sorted(m for m in sys.modules if m.startswith("pysqlite3")))
    """
)


def test_a_full_session_never_imports_pysqlite3_unless_asked(monkeypatch):
    monkeypatch.delenv("LETTA_NB_SQLITE", raising=False)
    out = subprocess.run([sys.executable, "-c", FULL_SESSION], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- client.query: the safe way to look -------------------------------------------------------------------


def test_query_reads_into_a_dataframe_through_the_runtimes_sqlite(client):
    agent = client.agents.create("sam")
    client.agents.messages.create(agent, "My name is Ada.")
    frame = client.query("SELECT role, content FROM messages WHERE agent_id = ? ORDER BY seq", [agent.id])
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["role", "content"]
    assert frame["role"].tolist()[0] == "user" and frame["content"].tolist()[0] == "My name is Ada."
    named = client.query("SELECT name FROM agents WHERE name = :name", {"name": "sam"})
    assert named["name"].tolist() == ["sam"]
    tables = set(client.query("SELECT name FROM sqlite_master WHERE type = 'table'")["name"])
    assert {"agents", "messages", "passages", "blocks"} <= tables
    assert "name" in client.query("PRAGMA table_info(agents)")["name"].tolist()
    assert asyncio.run(client.aquery("SELECT count(*) AS n FROM agents"))["n"].tolist() == [1]
    empty = client.query("SELECT id FROM agents WHERE name = 'nobody'")
    assert list(empty.columns) == ["id"] and len(empty) == 0


@pytest.mark.parametrize("sql, message", [
    ("DELETE FROM messages", "read-only"),
    ("UPDATE agents SET name = 'x'", "read-only"),
    ("INSERT INTO tools (id) VALUES ('x')", "read-only"),
    ("DROP TABLE messages", "read-only"),
    ("CREATE TABLE mine (x)", "read-only"),
    ("PRAGMA journal_mode = DELETE", "read-only"),
    ("PRAGMA wal_checkpoint(TRUNCATE)", "read-only"),
    ("ATTACH DATABASE 'other.db' AS other", "read-only"),
    ("VACUUM", "read-only"),
    ("SELEC * FROM agents", 'near "SELEC": syntax error'),
    ("SELECT * FROM no_such_table", "no such table: no_such_table"),
    ("SELECT 1; DELETE FROM messages", "one statement"),
])
def test_query_refuses_writes_and_names_sqlites_message(client, db_path, sql, message):
    agent = client.agents.create("sam")
    client.agents.messages.create(agent, "My name is Ada.")
    before = client.query("SELECT count(*) AS n FROM messages")["n"][0]
    with pytest.raises(InvalidArgumentError, match=message) as info:
        client.query(sql)
    assert "client.query" in str(info.value)
    assert client.query("SELECT count(*) AS n FROM messages")["n"][0] == before
    assert client.agents.retrieve("sam").name == "sam"
    assert not (db_path.parent / "other.db").exists()


@pytest.mark.parametrize("sql, params, message", [
    (42, None, "sql must be a string"),
    ("SELECT ?", None, "params"),
    ("SELECT ?", [1, 2], "params"),
    ("SELECT ?", "ab", "params must be"),
    ("SELECT ?", [object()], "params"),
])
def test_query_bad_arguments_name_the_argument(client, sql, params, message):
    with pytest.raises(InvalidArgumentError, match=message):
        client.query(sql, params)
