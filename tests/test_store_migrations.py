"""Opening stores: a blank one, one written by the previous schema, one written by a newer letta_nb.

Also which sqlite3 module opens them (the stdlib one, always, unless ``LETTA_NB_SQLITE=pysqlite3``: one
SQLite library per process on a store file) and where ``letta_nb.connect`` puts the file. Every store here
is a real SQLite file under ``tmp_path``; nothing is mocked except, in the driver tests, which modules exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import types

import pytest
import sqlalchemy as sa
from store_query import query

import letta_nb
from letta_nb.errors import SchemaVersionError, SQLiteExtensionError
from letta_nb.runtime.base_tools import BASE_TOOL_NAMES
from letta_nb.store.migrations import METADATA, MIGRATIONS, SCHEMA_VERSION, migrate
from letta_nb.store.sqlite.driver import (
    connect_raw,
    sqlite_module,
    vec_unavailable_reason,
    vec_version,
)
from letta_nb.store.store import Store

STDLIB_CAN_LOAD = hasattr(sqlite3.Connection, "enable_load_extension")


# ---- helpers ------------------------------------------------------------------------------------------


def sync_engine(path: str) -> sa.Engine:
    """A synchronous engine over our driver, wired like engine.py: the driver is in autocommit mode,
    so SQLAlchemy's "begin" hook has to emit BEGIN itself for transactions (and DDL) to be real."""
    engine = sa.create_engine(
        "sqlite://", module=sqlite_module(), creator=lambda: connect_raw(path), poolclass=sa.pool.NullPool
    )
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


def ledger(path: str) -> list[int]:
    return [v for (v,) in query(path, "select version from schema_migrations order by version")]


@pytest.fixture
def fresh_driver_choice():
    """sqlite_module() is cached per process; tests that change its inputs must see (and leave) a clean slate."""
    sqlite_module.cache_clear()
    yield
    sqlite_module.cache_clear()


# ---- a blank store ------------------------------------------------------------------------------------


def test_fresh_store_applies_every_migration(tmp_path):
    path = str(tmp_path / "fresh.db")
    with letta_nb.connect(path) as client:
        assert client.runtime.store.applied_migrations == [m.__name__ for m in MIGRATIONS]

    assert ledger(path) == list(range(1, SCHEMA_VERSION + 1))
    names = [n for (n,) in query(path, "select name from schema_migrations order by version")]
    assert names == [m.__name__ for m in MIGRATIONS]
    tables = {n for (n,) in query(path, "select name from sqlite_master where type = 'table'")}
    assert set(METADATA.tables) | {"schema_migrations"} <= tables


def test_reopening_applies_nothing(tmp_path):
    path = str(tmp_path / "again.db")
    letta_nb.connect(path).close()
    with letta_nb.connect(path) as client:
        assert client.runtime.store.applied_migrations == []
    assert ledger(path) == list(range(1, SCHEMA_VERSION + 1))


def test_engine_connections_have_our_pragmas_and_no_sqlite_vec(tmp_path):
    async def probe() -> dict[str, object]:
        store = await Store.open(str(tmp_path / "pragmas.db"))
        try:
            async with store.engine.connect() as conn:

                async def one(sql: str) -> object:
                    return (await conn.exec_driver_sql(sql)).scalar()

                got = {
                    "journal_mode": await one("PRAGMA journal_mode"),
                    "foreign_keys": await one("PRAGMA foreign_keys"),
                    "busy_timeout": await one("PRAGMA busy_timeout"),
                }
                with pytest.raises(sa.exc.OperationalError, match="no such function: vec_version"):
                    await one("select vec_version()")  # only the vector store's connection loads it
                return got
        finally:
            await store.close()

    got = asyncio.run(probe())
    assert got["journal_mode"] == "wal"
    assert got["foreign_keys"] == 1
    assert got["busy_timeout"] > 0


def test_driver_is_the_stdlib_module_whether_or_not_it_can_load_extensions(monkeypatch, fresh_driver_choice):
    monkeypatch.delenv("LETTA_NB_SQLITE", raising=False)
    assert sqlite_module() is sqlite3
    if STDLIB_CAN_LOAD:
        assert vec_version() is not None and vec_unavailable_reason() == ""
    else:  # this machine: vec0 is simply not used, and we can say why
        assert vec_version() is None
        assert "enable_load_extension" in vec_unavailable_reason()


# ---- upgrading a store written at schema version 1 ----------------------------------------------------


def _at(minute: int) -> dt.datetime:
    return dt.datetime(2024, 5, 1, 12, minute, tzinfo=dt.timezone.utc)


def build_v1_store(path: str) -> str:
    """A store as letta_nb wrote it at schema version 1: one agent that remembered a name. Returns its id."""
    engine = sync_engine(path)
    try:
        with engine.connect() as conn:
            assert migrate(conn, target=1) == [MIGRATIONS[0].__name__]
        with engine.begin() as conn:
            # Reflect rather than use METADATA: these must be the columns version 1 really had.
            v1 = sa.MetaData()
            v1.reflect(conn)
            assert "context_start_seq" not in v1.tables["agents"].c
            assert "steps" not in v1.tables
            conn.execute(v1.tables["agents"].insert().values(
                id="agent-v1", name="old-timer", model="offline", embedding="hash",
                system="You are a helpful agent.", max_steps=10, metadata={"from": "v1"}, last_seq=3,
                created_at=_at(0), updated_at=_at(3),
            ))
            conn.execute(v1.tables["blocks"].insert(), [
                dict(id="block-persona", agent_id="agent-v1", label="persona", value="I remember things.",
                     char_limit=5000, description="", read_only=False, updated_at=_at(0)),
                dict(id="block-human", agent_id="agent-v1", label="human", value="Name: Grace",
                     char_limit=5000, description="", read_only=False, updated_at=_at(2)),
            ])
            conn.execute(v1.tables["agent_tools"].insert(),
                         [dict(agent_id="agent-v1", tool_name=name) for name in BASE_TOOL_NAMES])
            append = {"id": "call_v1", "name": "core_memory_append",
                      "arguments": json.dumps({"label": "human", "content": "Name: Grace"})}
            # One statement per row: an executemany takes its columns from the first row only.
            for row in (
                dict(id="message-1", seq=1, role="user", content="My name is Grace.", created_at=_at(1)),
                dict(id="message-2", seq=2, role="assistant", content="Saving it.", tool_calls=[append],
                     created_at=_at(2)),
                dict(id="message-3", seq=3, role="tool", content=None, tool_call_id="call_v1",
                     name="core_memory_append", status="success", created_at=_at(3)),
            ):
                conn.execute(v1.tables["messages"].insert().values(agent_id="agent-v1", **row))
    finally:
        engine.dispose()
    return "agent-v1"


def test_upgrade_from_version_1_keeps_data_and_the_store_stays_usable(tmp_path):
    path = str(tmp_path / "v1.db")
    agent_id = build_v1_store(path)
    assert ledger(path) == [1]

    with letta_nb.connect(path) as client:
        assert client.runtime.store.applied_migrations == [m.__name__ for m in MIGRATIONS[1:]]
        assert [a.id for a in client.agents.list()] == [agent_id]
        agent = client.agents.retrieve("old-timer")
        assert agent.context_start_seq == 0
        assert agent.context_summary is None
        assert agent.last_seq == 3
        assert agent.metadata == {"from": "v1"}
        assert sorted(agent.tools) == sorted(BASE_TOOL_NAMES)
        assert {b.label: b.value for b in client.agents.blocks.list(agent_id)} == {
            "persona": "I remember things.",
            "human": "Name: Grace",
        }
        old = client.agents.messages.list(agent_id)
        assert [(m.seq, m.role, m.id) for m in old] == [
            (1, "user", "message-1"), (2, "assistant", "message-2"), (3, "tool", "message-3"),
        ]
        assert old[1].tool_calls[0].name == "core_memory_append"
        assert old[0].created_at == _at(1)

        response = client.agents.messages.create(agent_id, "What is my name?")
        assert "Grace" in response.text  # answered from the migrated human block
        assert response.messages[0].seq == 4
        after = client.agents.messages.list(agent_id)
        assert [m.id for m in after[:3]] == ["message-1", "message-2", "message-3"]
        assert [m.seq for m in after] == list(range(1, len(after) + 1))
        assert client.agents.retrieve(agent_id).last_seq == after[-1].seq

    assert ledger(path) == list(range(1, SCHEMA_VERSION + 1))
    steps = query(path, "select agent_id from steps")
    assert steps and {a for (a,) in steps} == {agent_id}


# ---- several kernels opening one new store at once ----------------------------------------------------

# Each child imports letta_nb, says it is ready, then spins until the parent says go, so all of them
# reach migrate() within microseconds of each other.
OPENER = textwrap.dedent(
    """
    import os, sys
    import letta_nb

    path, ready, go = sys.argv[1:]
    open(ready, "w").close()
    while not os.path.exists(go):
        pass
    try:
        letta_nb.connect(path).close()
    except Exception as e:
        print(f"{type(e).__name__}: {str(e).splitlines()[0]}")
    else:
        print("ok")
    """
)


def open_concurrently(path: str, workdir, n: int) -> list[str]:
    """What each of ``n`` processes reported after opening ``path`` at the same moment."""
    go = workdir / "go"
    ready = [workdir / f"ready{i}" for i in range(n)]
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, path, str(r), str(go)], stdout=subprocess.PIPE, text=True)
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 120  # only a hang guard
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "an opener did not start"
            time.sleep(0.01)
        go.touch()
        return [p.communicate(timeout=120)[0].strip() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.mark.slow
def test_kernels_opening_a_new_store_at_once_all_succeed(tmp_path):
    for round_no in range(3):
        workdir = tmp_path / f"round{round_no}"
        workdir.mkdir()
        path = str(workdir / "shared.db")
        assert open_concurrently(path, workdir, 4) == ["ok"] * 4
        assert ledger(path) == list(range(1, SCHEMA_VERSION + 1))


# ---- a store from the future ---------------------------------------------------------------------------


def test_store_from_a_newer_letta_nb_is_refused(tmp_path):
    path = str(tmp_path / "future.db")
    letta_nb.connect(path).close()
    newer = SCHEMA_VERSION + 1
    conn = connect_raw(path, vec=False)
    try:
        conn.execute(
            "insert into schema_migrations (version, name, applied_at) values (?, ?, ?)",
            (newer, "m9999_from_the_future", "2030-01-01 00:00:00.000000"),
        )
    finally:
        conn.close()

    with pytest.raises(SchemaVersionError) as info:
        letta_nb.connect(path)
    message = str(info.value)
    assert f"schema version {newer}" in message
    assert f"({SCHEMA_VERSION})" in message
    assert "pip install -U" in message
    assert ledger(path)[-1] == newer  # refused, not touched


# ---- which sqlite3 module --------------------------------------------------------------------------------


def test_stdlib_choice_opens_stores_with_or_without_sqlite_vec(monkeypatch, fresh_driver_choice, tmp_path):
    monkeypatch.setenv("LETTA_NB_SQLITE", "stdlib")
    assert sqlite_module() is sqlite3
    with letta_nb.connect(str(tmp_path / "stdlib.db")) as client:
        agent = client.agents.create("sam")
        client.agents.passages.create(agent, "The vault opens at dawn.")
        assert client.agents.passages.search(agent, "vault", top_k=1)[0].text == "The vault opens at dawn."
        assert client.runtime.store.vectors.vec0 == STDLIB_CAN_LOAD


def test_opting_into_pysqlite3_picks_it_and_loads_sqlite_vec(monkeypatch, fresh_driver_choice):
    pytest.importorskip("pysqlite3", reason="pysqlite3-binary (the vec0 extra) is not installed")
    monkeypatch.setenv("LETTA_NB_SQLITE", "pysqlite3")
    assert sqlite_module().__name__ == "pysqlite3.dbapi2"
    assert str(vec_version()).startswith("v")


def test_unknown_driver_choice_is_a_clear_error(monkeypatch, fresh_driver_choice):
    monkeypatch.setenv("LETTA_NB_SQLITE", "bogus")
    with pytest.raises(SQLiteExtensionError) as info:
        sqlite_module()
    message = str(info.value)
    assert "'bogus'" in message
    assert "'stdlib'" in message and "'pysqlite3'" in message


def test_opting_into_pysqlite3_without_it_installed_names_the_fix(monkeypatch, fresh_driver_choice, tmp_path):
    monkeypatch.setenv("LETTA_NB_SQLITE", "pysqlite3")
    monkeypatch.setitem(sys.modules, "pysqlite3", None)  # None in sys.modules makes `import` raise ImportError
    monkeypatch.setitem(sys.modules, "pysqlite3.dbapi2", None)
    with pytest.raises(SQLiteExtensionError, match=r"pip install 'letta-nb\[vec0\]'.*unset LETTA_NB_SQLITE"):
        sqlite_module()
    with pytest.raises(SQLiteExtensionError, match="LETTA_NB_SQLITE=pysqlite3"):  # and through the public API
        letta_nb.connect(str(tmp_path / "opted.db"))
    assert not (tmp_path / "opted.db").exists()


def test_a_stdlib_module_without_extension_support_means_no_vec0_not_an_error(monkeypatch, fresh_driver_choice):
    monkeypatch.delenv("LETTA_NB_SQLITE", raising=False)
    no_ext = types.ModuleType("sqlite3")  # a sqlite3 built without enable_load_extension
    no_ext.Connection = type("Connection", (), {})
    monkeypatch.setitem(sys.modules, "sqlite3", no_ext)
    assert sqlite_module() is no_ext
    assert vec_version() is None and "enable_load_extension" in vec_unavailable_reason()


# ---- where connect() puts the file -----------------------------------------------------------------------


def test_memory_store_is_a_temporary_file_removed_on_close(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = letta_nb.connect(":memory:")
    try:
        path = client.runtime.store.location.sqlite_path
        assert os.path.isfile(path)
        assert client.store_location == ":memory: (temporary file)"
        agent = client.agents.create("scratch")
        client.agents.messages.create(agent.id, "My name is Ada.")
        assert "Name: Ada" in client.agents.blocks.retrieve(agent.id, "human").value
    finally:
        client.close()
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))
    # no ":memory:" file in the working directory either (the home holds the user's trust key only)
    assert [p for p in os.listdir(tmp_path) if p != "letta_home"] == []
    assert os.listdir(tmp_path / "letta_home") == ["trust_key"]


def test_directory_path_puts_the_database_inside(tmp_path):
    home = tmp_path / "agents"
    home.mkdir()
    with letta_nb.connect(home) as client:
        assert client.store_location == str(home / "letta_nb.db")
        client.agents.create("inside")
    assert (home / "letta_nb.db").is_file()
    assert ledger(str(home / "letta_nb.db")) == list(range(1, SCHEMA_VERSION + 1))
