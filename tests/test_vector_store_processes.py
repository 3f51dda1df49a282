"""The SQLite vector store across processes: vec0 in a process that opted into pysqlite3, and stores
moving between processes with and without sqlite-vec.

vec0 needs a sqlite3 module that can load extensions. The stdlib one of this machine's Python cannot, and
the runtime loads pysqlite3 only when ``LETTA_NB_SQLITE=pysqlite3`` (never beside the stdlib module on one
file), so the vec0 cases of tests/test_vector_store.py (and this file's) run again in a child pytest
process that opted in, which must skip none of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import letta_nb
from letta_nb.store.vector import VectorQuery
from tests.test_vector_store import HAVE_VEC0, backend

PATHS_TESTS = os.path.join(os.path.dirname(__file__), "test_vector_store.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the child imports tests.* from here


# ---- vec0 in a process that opted in; stores moving between processes with and without vec0 ---------------

CHILD_ENV = {**os.environ, "LETTA_NB_SQLITE": "pysqlite3"}


def in_pysqlite3_process(code: str, *args: str) -> dict:
    """Run ``code`` in a child process whose runtime uses pysqlite3 (so sqlite-vec loads); its last stdout
    line is JSON."""
    pytest.importorskip("pysqlite3", reason="pysqlite3-binary (the vec0 extra) is not installed")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(HAVE_VEC0, reason="sqlite-vec loads in this process: the vec0 cases already ran here")
def test_vec0_cases_in_a_process_that_opted_into_pysqlite3():
    pytest.importorskip("pysqlite3", reason="pysqlite3-binary (the vec0 extra) is not installed")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PATHS_TESTS, __file__,
                           "-k", "not pysqlite3"],
                          capture_output=True, text=True, env=CHILD_ENV, timeout=600, cwd=REPO)
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "skipped" not in summary and "passed" in summary, summary  # every vec0 case ran, none skipped


WRITE_WITH_VEC0 = """
    import asyncio, json, sys
    import numpy as np
    import letta_nb
    from letta_nb.store.sqlite.driver import sqlite_module, vec_version
    from letta_nb.store.sqlite.vectors import SqliteVecStore
    from letta_nb.store.vector import VectorQuery

    path = sys.argv[1]
    with letta_nb.connect(path) as client:
        for name in ("keep", "gone"):
            agent = client.agents.create(name)
            for i in range(30):
                client.agents.passages.create(agent, f"{name} passage number {i} about topic {i % 7}",
                                              tags=[f"t{i % 3}"])
        store = client.runtime.store
        q = client._thread.run(client.runtime.embedder("hash").embed(["topic 3"]))[0]
        vec0 = SqliteVecStore(path, cache_bytes=0)
        for name in ("keep", "gone"):  # copy every passage into vec0
            agent_id = client.agents.retrieve(name).id
            client._thread.run(vec0.search(VectorQuery(agent_id, q, top_k=5)))
        conn = vec0._conn
        # the delete trigger letta_nb 0.1.0 created (a store from before lazy deletes)
        conn.execute("CREATE TRIGGER passages_vec_384_ad AFTER DELETE ON passages BEGIN "
                     "DELETE FROM passages_vec_384 WHERE passage_id = old.id; END")
        rows = conn.execute("select count(*) from passages_vec_384").fetchone()[0]
        client._thread.run(vec0.close())
    print(json.dumps({"module": sqlite_module().__name__, "vec": vec_version(), "vec_rows": rows}))
"""

SEARCH_WITH_VEC0 = """
    import json, sys
    import letta_nb
    from letta_nb.store.sqlite.driver import connect_raw
    from letta_nb.store.sqlite.vectors import SqliteVecStore
    from letta_nb.store.vector import VectorQuery

    path = sys.argv[1]
    with letta_nb.connect(path) as client:
        agent = client.agents.retrieve("keep")
        q = client._thread.run(client.runtime.embedder("hash").embed(["topic 3"]))[0]
        vec0 = SqliteVecStore(path, cache_bytes=0)
        hits = client._thread.run(vec0.search(VectorQuery(agent.id, q, top_k=100)))
        client._thread.run(vec0.close())
        conn = connect_raw(path, vec=True)
        rows = {a: n for a, n in conn.execute("select agent_id, count(*) from passages_vec_384 group by agent_id")}
        triggers = [n for (n,) in conn.execute("select name from sqlite_master where type = 'trigger'")]
        conn.close()
    print(json.dumps({"hits": [h.passage_id for h in hits], "vec0": vec0.stats["vec0_searches"], "rows": rows,
                      "triggers": triggers}))
"""


def test_a_store_written_with_vec0_works_without_it_and_back(tmp_path):
    """Written by a process with vec0 (tables, copied rows, an old delete trigger), then used by this one
    without sqlite-vec: deleting a passage and an agent work, integrity_check is ok, search is exact; then
    a vec0 process again sees the deletes and the passages added meanwhile."""
    path = str(tmp_path / "moved.db")
    wrote = in_pysqlite3_process(WRITE_WITH_VEC0, path)
    assert wrote["module"] == "pysqlite3.dbapi2" and wrote["vec"] and wrote["vec_rows"] == 60

    with letta_nb.connect(path) as client:  # this process: no sqlite-vec unless HAVE_VEC0
        triggers = client.query("SELECT name FROM sqlite_master WHERE type = 'trigger'")["name"].tolist()
        assert not [t for t in triggers if t.startswith("passages_vec_")]  # dropped on open
        assert client.query("PRAGMA integrity_check")["integrity_check"].tolist() == ["ok"]
        keep = client.agents.retrieve("keep")
        before = client.agents.passages.list(keep)
        doomed = [p for p in before if p.text.endswith("topic 3")]
        for p in doomed:  # fired "no such module: vec0" through the old trigger
            client.agents.passages.delete(keep, p.id)
        client.agents.delete("gone")  # cascades to passages
        added = client.agents.passages.create(keep, "a late passage about topic 3")
        left = {p.id for p in client.agents.passages.list(keep)}
        assert left == {p.id for p in before} - {p.id for p in doomed} | {added.id}
        hits = client.agents.passages.search(keep, "topic 3", top_k=100, search_mode="vector")
        assert {h.id for h in hits} == left and hits[0].id == added.id
        q = client._thread.run(client.runtime.embedder("hash").embed(["topic 3"]))[0]
        scan = backend(client.runtime.store, "scan")
        try:
            scanned = client._thread.run(scan.search(VectorQuery(keep.id, q, top_k=100)))
        finally:
            client._thread.run(scan.close())
        assert [h.passage_id for h in scanned] == [h.id for h in hits]
        assert client.query("PRAGMA integrity_check")["integrity_check"].tolist() == ["ok"]
        tables = set(client.query("SELECT name FROM sqlite_master WHERE type = 'table'")["name"])
        assert "passages_vec_384" in tables  # left for whoever has vec0

    back = in_pysqlite3_process(SEARCH_WITH_VEC0, path)
    # Deletes seen, the new passage copied in. (Order is compared on the exact numpy paths above; these
    # hash-embedded texts tie, and vec0 rounds its distances differently.)
    assert back["vec0"] == 1 and set(back["hits"]) == left and back["hits"][0] == added.id
    assert back["rows"] == {keep.id: len(left)}  # the deleted passages' and agent's vec0 rows are gone
    assert back["triggers"] == [t for t in triggers if not t.startswith("passages_vec_")]
