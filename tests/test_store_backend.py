"""The SQLite and PostgreSQL backends satisfy the backend protocols of store/backend.py.

The records the store takes and returns (store/records.py) are checked against the migrated tables: the
writers bind each column from the record's field of that name.

Checked twice: ``isinstance`` against the ``runtime_checkable`` protocols on a real open store (which only
sees that the names exist), and by ``inspect``: every protocol method is there with the same parameters, in
the same order, of the same kind, with defaults where the protocol has them, sync or async alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import types
from typing import Any

import pytest

from letta_nb.schemas import Message
from letta_nb.store import backend
from letta_nb.store.migrations import METADATA
from letta_nb.store.postgres import leases as pg_leases
from letta_nb.store.postgres.file_writer import PgFileWriter
from letta_nb.store.postgres.step_writer import PgStepWriter
from letta_nb.store.postgres.vectors import PgVectorStore
from letta_nb.store.records import FileRecord, PassageRecord, StepRecord, ToolRecord
from letta_nb.store.sqlite import leases
from letta_nb.store.sqlite.file_writer import FileWriter
from letta_nb.store.sqlite.step_writer import StepWriter
from letta_nb.store.sqlite.vectors import SqliteVecStore
from letta_nb.store.store import Store

SQLITE = [
    (backend.StepWrites, StepWriter),
    (backend.FileWrites, FileWriter),
    (backend.VectorStore, SqliteVecStore),
    (backend.LeaseRows, leases),
]
POSTGRES = [
    (backend.StepWrites, PgStepWriter),
    (backend.FileWrites, PgFileWriter),
    (backend.VectorStore, PgVectorStore),
    (backend.AsyncLeaseRows, pg_leases),
]


def _methods(protocol: type) -> dict[str, Any]:
    return {name: fn for name, fn in vars(protocol).items() if inspect.isfunction(fn) and not name.startswith("_")}


def _shape(fn: Any, *, bound: bool) -> tuple[bool, list[tuple[str, Any, bool]]]:
    params = list(inspect.signature(fn).parameters.values())[1 if bound else 0:]
    return (inspect.iscoroutinefunction(fn),
            [(p.name, p.kind, p.default is not inspect.Parameter.empty) for p in params])


def mismatches(protocol: type, impl: Any) -> list[str]:
    """How ``impl`` (a class, or a module of functions) departs from ``protocol``; empty when it fits."""
    out = []
    for name, want in _methods(protocol).items():
        got = getattr(impl, name, None)
        if not callable(got):
            out.append(f"{name}: missing")
            continue
        want_async, want_params = _shape(want, bound=True)
        got_async, got_params = _shape(got, bound=not isinstance(impl, types.ModuleType))
        if want_async != got_async:
            out.append(f"{name}: {'async' if want_async else 'sync'} expected")
        if want_params != got_params:
            out.append(f"{name}: parameters {[p[0] for p in got_params]}, expected {[p[0] for p in want_params]}")
    return out


def test_every_protocol_has_methods_to_check():
    protocols = {obj for obj in map(vars(backend).get, backend.__all__)
                 if isinstance(obj, type) and getattr(obj, "_is_protocol", False)}
    # each protocol has an implementation checked below (lease rows: sync on SQLite, async on PostgreSQL)
    assert protocols == {p for p, _ in SQLITE} | {p for p, _ in POSTGRES}
    assert _methods(backend.StepWrites).keys() == {"submit", "read", "close"}
    assert _methods(backend.FileWrites).keys() == {"replace_files", "close"}
    assert _methods(backend.VectorStore).keys() == {"prepare", "search", "close"}
    lease_ops = {"acquire", "renew", "release", "peek", "agent_state", "drop_ticket"}
    assert _methods(backend.LeaseRows).keys() == _methods(backend.AsyncLeaseRows).keys() == lease_ops
    for name in lease_ops:  # the async flavour differs in nothing but being awaited
        assert _shape(getattr(backend.LeaseRows, name), bound=True)[1] == \
            _shape(getattr(backend.AsyncLeaseRows, name), bound=True)[1]


@pytest.mark.parametrize(("protocol", "impl"), SQLITE, ids=[p.__name__ for p, _ in SQLITE])
def test_sqlite_implementation_matches_its_protocol(protocol, impl):
    assert mismatches(protocol, impl) == []


@pytest.mark.parametrize(("protocol", "impl"), POSTGRES, ids=[p.__name__ for p, _ in POSTGRES])
def test_postgres_implementation_matches_its_protocol(protocol, impl):
    assert mismatches(protocol, impl) == []


def test_an_open_postgres_store_hands_the_runtime_protocol_objects(pg_server):
    url = pg_server.url(pg_server.create_database(pg_server.migrated_template()))

    async def main() -> None:
        store = await Store.open(url)
        try:
            assert isinstance(store.writer, PgStepWriter) and isinstance(store.writer, backend.StepWrites)
            assert isinstance(store.file_writer, backend.FileWrites)
            assert isinstance(store.vectors, backend.VectorStore)
            assert store.lease_rows is pg_leases
        finally:
            await store.close()

    asyncio.run(main())
    assert isinstance(pg_leases, backend.AsyncLeaseRows)


def test_an_open_store_hands_the_runtime_protocol_objects(tmp_path):
    async def main() -> None:
        store = await Store.open(str(tmp_path / "s.db"))
        try:
            assert isinstance(store.writer, backend.StepWrites)
            assert isinstance(store.file_writer, backend.FileWrites)
            assert isinstance(store.vectors, backend.VectorStore)
        finally:
            await store.close()

    asyncio.run(main())
    assert isinstance(leases, backend.LeaseRows)


def test_the_check_catches_a_backend_that_drifts():
    class Drifted:
        def submit(self, item: Any) -> Any:  # renamed parameter
            ...

        async def close(self) -> None:  # async where the protocol is sync
            ...

    assert not isinstance(Drifted(), backend.StepWrites)  # no read()
    assert mismatches(backend.StepWrites, Drifted) == [
        "submit: parameters ['item'], expected ['write']",
        "read: missing",
        "close: sync expected",
    ]
    drifted_module = types.ModuleType("drifted")
    drifted_module.__dict__.update({name: getattr(leases, name)
                                    for name in ("acquire", "renew", "peek", "agent_state", "drop_ticket")})
    drifted_module.release = lambda cur, agent_id: True  # forgot the token
    assert mismatches(backend.LeaseRows, drifted_module) == [
        "release: parameters ['cur', 'agent_id'], expected ['cur', 'agent_id', 'token']"]


RECORDS = [("messages", Message), ("passages", PassageRecord), ("steps", StepRecord), ("tools", ToolRecord),
           ("files", FileRecord)]


@pytest.mark.parametrize(("table", "record"), RECORDS, ids=[t for t, _ in RECORDS])
def test_each_record_has_a_field_for_each_column_of_its_table(table, record):
    assert sorted(f.name for f in dataclasses.fields(record)) == sorted(METADATA.tables[table].columns.keys())
