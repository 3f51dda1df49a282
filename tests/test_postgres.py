"""The PostgreSQL backend against a real server (letta_nb/testing/pgserver.py): URLs, migrations from two
processes at once, fenced group commits, lease rows in arrival order, the vector copy's commit-order
sequence, fenced uploads by COPY, and no connection left idle in a transaction after a cancelled turn.

These run in every pass (they ask for the ``pg_server`` fixture themselves); ``--backend postgres`` runs the
rest of the store tests on PostgreSQL too (conftest.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

import letta_nb
from letta_nb.errors import DimensionMismatchError, InvalidArgumentError, StaleCommitError
from letta_nb.runtime.events import AssistantDelta, StopEvent
from letta_nb.schemas import AgentState
from letta_nb.store.backend import Busy, Grant, StepWrite
from letta_nb.store.engine import IDLE_IN_TRANSACTION_MS, resolve_location
from letta_nb.store.files import FilePassages
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.migrations import MIGRATIONS
from letta_nb.store.postgres import backend as pg_backend
from letta_nb.store.postgres import group_commit, leases, peeks
from letta_nb.store.postgres import step_writer as pg_step_writer
from letta_nb.store.records import FileRecord, PassageRecord
from letta_nb.store.store import Store
from letta_nb.store.vector import VectorQuery
from tests.agent_helpers import SLOW

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(pg_server: Any) -> Any:
    name = pg_server.create_database(pg_server.migrated_template())
    yield pg_server.url(name)
    pg_server.drop_database(name)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def agents(store: Store, *names: str) -> list[str]:
    ids = []
    for name in names:
        agent = AgentState(id=new_id("agent"), name=name, model="offline", embedding="hash", system="s", blocks=[],
                           tools=[], max_steps=5, created_at=utcnow(), metadata={})
        await store.insert_agent(agent)
        ids.append(agent.id)
    return ids


def test_store_urls_are_recognised_and_bad_ones_refused():
    where = resolve_location("postgresql://ann:hunter2@/letta?host=/tmp/sock")
    assert where.sqlite_path is None and where.url.startswith("postgresql+asyncpg://ann:hunter2@/letta")
    assert "hunter2" not in where.display
    with pytest.raises(InvalidArgumentError, match="runs on asyncpg") as e:
        resolve_location("postgresql+psycopg2://ann:hunter2@db/letta")
    assert "hunter2" not in str(e.value)
    with pytest.raises(InvalidArgumentError, match="names no database"):
        resolve_location("postgresql://ann:hunter2@db")
    with pytest.raises(InvalidArgumentError, match="SQLite files or PostgreSQL"):
        resolve_location("mysql://ann@db/letta")


_MIGRATE = textwrap.dedent("""
    import asyncio, os, sys, time
    from letta_nb.store.store import Store
    while not os.path.exists(sys.argv[2]):  # both processes start migrating together
        time.sleep(0.001)
    async def main():
        store = await Store.open(sys.argv[1])
        print(",".join(store.applied_migrations))
        await store.close()
    asyncio.run(main())
""")


def test_two_processes_migrating_a_fresh_database_apply_each_migration_once(pg_server, tmp_path):
    name = pg_server.create_database()  # empty: no template
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, pg_server.url(name), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    applied = [name for out, _ in outputs for name in out.strip().split(",") if name]
    assert sorted(applied) == sorted(m.__name__ for m in MIGRATIONS)  # each once, by one process or the other
    ledger = pg_server.admin("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version",
                             database=name)
    assert [(r[0], r[1]) for r in ledger] == [(v, 1) for v in range(1, len(MIGRATIONS) + 1)]
    columns = pg_server.admin("SELECT data_type FROM information_schema.columns WHERE table_name = 'agents' "
                              "AND column_name = 'tool_rules'", database=name)
    assert columns[0][0] == "jsonb"  # the dialect-aware JSON type
    pg_server.drop_database(name)


def test_a_stale_fenced_write_drops_out_of_its_group_and_the_rest_commits(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            a, b = await agents(store, "a", "b")
            ops = [store.writer.submit(lambda c, x=x: leases.acquire(c, x, "me", 1, "h", 0.0, 60.0, 5.0))
                   for x in (a, b)]
            grant_a, grant_b = await asyncio.gather(*ops)
            assert isinstance(grant_a, Grant) and isinstance(grant_b, Grant)

            def write(agent: str, token: int, text: str) -> StepWrite:
                msg = letta_nb.Message(id=new_id("message"), agent_id=agent, seq=1, role="user", content=text,
                                       created_at=utcnow())
                return StepWrite(agent, messages=[msg], last_seq=1, fence=(token, 0))

            # One group (submitted in one loop iteration): a's token is stale, b's holds.
            stale, fresh = store.writer.submit(write(a, grant_a.token + 1, "stale")), \
                store.writer.submit(write(b, grant_b.token, "fresh"))
            results = await asyncio.gather(stale, fresh, return_exceptions=True)
            assert isinstance(results[0], StaleCommitError) and isinstance(results[1], float)
            assert store.writer.largest_group >= 2
            assert [m.content for m in await store.load_messages(a)] == []
            assert [m.content for m in await store.load_messages(b)] == ["fresh"]
            assert (await store.load_agent(a)).last_seq == 0 and (await store.load_agent(b)).last_seq == 1
            # b's last_seq moved on: the same fence again is refused (compare-and-set on last_seq)
            with pytest.raises(StaleCommitError):
                await store.writer.submit(write(b, grant_b.token, "again"))
        finally:
            await store.close()

    run(main())


def test_lease_waiters_are_served_in_arrival_order(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            (a,) = await agents(store, "a")

            def take(holder: str, now: float) -> Any:
                return store.writer.submit(lambda c: leases.acquire(c, a, holder, 1, "h", now, 30.0, 5.0))

            first = await take("one", 100.0)
            assert isinstance(first, Grant) and first.token == 1
            assert isinstance(await take("two", 100.1), Busy)  # queued first ...
            third = await take("three", 100.2)  # ... then this one
            assert isinstance(third, Busy) and third.holder == "one"
            assert await store.writer.submit(lambda c: leases.release(c, a, first.token))
            assert await take("three", 100.3) == Busy(None, None, None, None, None)  # free, but two is older
            second = await take("two", 100.4)
            assert isinstance(second, Grant) and second.token == 2
            assert (await store.writer.read(lambda c: leases.peek(c, a, 100.5)))[:2] == (2, "two")
            # A holder that stops renewing loses the lease when it expires; the taker is told.
            await store.writer.submit(lambda c: leases.drop_ticket(c, a, "three"))
            late = await take("four", 200.0)
            assert isinstance(late, Grant) and late.took_expired and late.token == 3
            assert not await store.writer.submit(lambda c: leases.renew(c, a, second.token, 300.0))
            # A waiter that stops renewing its ticket drops out: it neither blocks a grant nor stays queued.
            assert isinstance(await take("five", 200.1), Busy)  # its ticket is good until 205.1
            assert await store.writer.submit(lambda c: leases.release(c, a, late.token))
            assert await take("six", 203.0) == Busy(None, None, None, None, None)  # five is still first
            after = await take("six", 206.0)
            assert isinstance(after, Grant) and after.token == 4 and not after.took_expired
            assert await store.writer.read(lambda c: c.fetch("SELECT holder FROM lease_waiters")) == []
        finally:
            await store.close()

    run(main())


class _Counting:
    """An asyncpg connection that counts the statements sent through it (each is a round trip)."""

    def __init__(self, conn: Any):
        self.conn, self.sent = conn, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.conn, name)
        if name not in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
            return method

        async def counted(*args: Any) -> Any:
            self.sent += 1
            return await method(*args)
        return counted


def test_a_grant_and_an_install_are_one_round_trip_each(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            (a,) = await agents(store, "a")
            counting: list[_Counting] = []

            def op(fn: Any, *args: Any) -> Any:
                def run_counted(c: Any) -> Any:
                    counting.append(_Counting(c))
                    return fn(counting[-1], *args)
                return store.writer.submit(run_counted)

            grant = await op(leases.acquire, a, "me", 1, "h", 100.0, 30.0, 5.0)
            queued = await op(leases.acquire, a, "other", 2, "h2", 100.1, 30.0, 5.0)
            assert isinstance(grant, Grant) and grant.token == 1 and queued == Busy("me", 1, "h", 100.0, 130.0)
            assert await store.writer.submit(lambda c: leases.release(c, a, grant.token))
            installed = await op(leases.install, a, 7, "redis-holder", 3, "h3", 101.0, 30.0)
            assert isinstance(installed, Grant) and installed.token == 7 and not installed.took_expired
            assert await op(leases.install, a, 5, "redis-holder", 3, "h3", 101.0, 30.0) == 7  # not above the row's
            assert await op(leases.acquire, "no-such-agent", "me", 1, "h", 102.0, 30.0, 5.0) is None
            assert [c.sent for c in counting] == [1] * 5
            # the queued ticket of "other" is still there; an agent that is gone leaves none behind
            tickets = await store.writer.read(lambda c: c.fetch("SELECT agent_id, holder FROM lease_waiters"))
            assert [tuple(t) for t in tickets] == [(a, "other")]
        finally:
            await store.close()

    run(main())


def test_a_group_of_grants_is_one_statement_taken_in_agent_order(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            a, b, c = await agents(store, "a", "b", "c")
            held = await store.writer.submit(functools.partial(leases.acquire, agent_id=c, holder="other", pid=2,
                                                               host="h2", now=100.0, ttl=30.0, ticket_ttl=5.0))
            assert isinstance(held, Grant)
            asked = (c, "no-such-agent", b, a)
            items: list[Any] = [functools.partial(leases.acquire, agent_id=x, holder="me", pid=1, host="h", now=100.5,
                                                  ttl=30.0, ticket_ttl=5.0) for x in asked]
            async with store._backend.pool.acquire() as conn:
                counting = _Counting(conn)
                results = await group_commit.transaction(counting, items, {})
            assert counting.sent == 1
            assert results[0] == Busy("other", 2, "h2", 100.0, 130.0) and results[1] is None
            assert all(isinstance(r, Grant) and r.token == 1 and r.last_seq == 0 for r in results[2:])
            for agent, holder in ((a, "me"), (b, "me"), (c, "other")):  # committed; our ticket queued for c
                peeked = await store.writer.read(lambda cur, x=agent: leases.peek(cur, x, 100.6))
                assert peeked[1] == holder and peeked[6] == (agent == c)
            # Redis's grants installed in the rows: one statement too, each answered as alone
            installs: list[Any] = [functools.partial(leases.install, agent_id=x, token=t, holder="redis", pid=3,
                                                     host="h3", now=101.0, ttl=30.0) for x, t in ((a, 5), (b, 1))]
            async with store._backend.pool.acquire() as conn:
                counting = _Counting(conn)
                installed = await group_commit.transaction(counting, installs, {})
            assert counting.sent == 1
            assert isinstance(installed[0], Grant) and installed[0].token == 5 and installed[0].took_expired
            assert installed[1] == 1  # b's row holds token 1 already: not above it, nothing written
        finally:
            await store.close()

    run(main())


def test_the_writer_and_peek_connections_open_warm_with_the_store(url):
    """The step writer's connection and the peek batcher's are opened as the store opens, each with its hot
    statements already prepared (and the lease functions compiled), writing nothing; a write that comes during
    the warm-up waits for it and lands."""
    async def prepared(conn: Any) -> set[str]:
        return {r[0] for r in await conn.fetch("SELECT statement FROM pg_prepared_statements")}

    async def main() -> None:
        store = await Store.open(url)
        try:
            writer = store.writer
            assert writer._warming is not None and writer.peeks._warming is not None
            grant = await writer.submit(functools.partial(leases.acquire, agent_id="no-such-agent", holder="me",
                                                          pid=1, host="h", now=100.0, ttl=30.0, ticket_ttl=5.0))
            assert grant is None and writer._warming is None  # the write waited for the warm-up
            await writer.warmed()
            assert writer._conn is not None and writer.peeks._own is not None
            on_writer, on_peeks = await prepared(writer._conn), await prepared(writer.peeks._own)
            assert {group_commit._FENCED_STEPS_JSON, leases._ACQUIRE.one_sql, leases._ACQUIRE.many_sql,
                    leases._INSTALL.one_sql, leases._INSTALL.many_sql} <= on_writer
            assert peeks.PEEK_MANY in on_peeks and any("WHERE a.id = $2" in s for s in on_peeks)
            (a,) = await agents(store, "a")
            assert (await writer.read(lambda c: leases.peek(c, a, 100.0)))[0] is None  # warm-up wrote no lease
            counts = await writer.read(lambda c: c.fetchrow(
                "SELECT (SELECT count(*) FROM agent_leases), (SELECT count(*) FROM lease_waiters), "
                "(SELECT count(*) FROM messages), (SELECT count(*) FROM steps)"))
            assert tuple(counts) == (0, 0, 0, 0)
        finally:
            await store.close()

    run(main())


def test_a_failed_or_interrupted_warm_up_leaves_the_writer_working(url):
    """A warm-up whose connection fails is dropped (the first commit opens its own); a store closed during
    its warm-up leaves no connection behind."""
    async def main() -> None:
        store = await Store.open(url)
        try:
            attempts: list[int] = []
            real = store.writer._connect

            async def flaky() -> Any:
                attempts.append(1)
                if len(attempts) == 1:
                    raise OSError("connection refused (test)")
                return await real()

            writer = pg_step_writer.PgStepWriter(flaky, store._backend.pool)
            writer.warm()
            await asyncio.sleep(0)
            assert await writer.submit(lambda c: c.fetchval("SELECT 41 + 1")) == 42
            assert len(attempts) == 3  # the writer's warm-up (refused), the peek batcher's, the commit's own
            writer.close()
            await writer.warmed()  # the peek batcher's warm-up: cancelled by close(), or done
        finally:
            await store.close()
        for delay in (0.0, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013):  # closed with its warm-ups at any point
            closed = await Store.open(url)
            await asyncio.sleep(delay)
            await closed.close()
        conn = await asyncpg.connect(pg_backend.dsn(resolve_location(url)))
        try:
            left = -1
            for _ in range(100):
                left = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                           "'letta_nb' AND datname = current_database()")
                if left == 0:
                    break
                await asyncio.sleep(0.05)
            assert left == 0
        finally:
            await conn.close()

    run(main())


def _passages(agent: str, vectors: np.ndarray, start: int = 0) -> list[PassageRecord]:
    return [PassageRecord(new_id("passage"), agent, f"p{start + i}", v.astype(np.float32).tobytes(), "hash", ("t",),
                          utcnow()) for i, v in enumerate(vectors)]


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _exact(vectors: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    scores = (vectors.astype(np.float64) @ q.astype(np.float64)).astype(np.float32)
    return np.argsort(-scores, kind="stable")[:k].tolist()


def test_the_vector_copy_follows_commits_from_other_connections(url):
    rng = np.random.default_rng(7)

    async def main() -> None:
        mine, theirs = await Store.open(url), await Store.open(url)  # two processes' views of one store
        try:
            (a,) = await agents(mine, "a")
            vectors = _unit(rng, 40)
            rows = _passages(a, vectors[:30])
            await theirs.insert_passages(rows)
            q = _unit(rng, 1)[0]
            ids = [r.id for r in rows]
            hits = await mine.vectors.search(VectorQuery(a, q, top_k=5))
            assert [h.passage_id for h in hits] == [ids[i] for i in _exact(vectors[:30], q, 5)]
            more = _passages(a, vectors[30:], 30)
            await theirs.insert_passages(more)  # appended by the per-agent sequence, not reloaded
            ids += [r.id for r in more]
            hits = await mine.vectors.search(VectorQuery(a, q, top_k=40))
            assert [h.passage_id for h in hits] == [ids[i] for i in _exact(vectors, q, 40)]
            assert mine.vectors.stats["appends"] == 1 and mine.vectors.stats["reloads"] == 1
            _, seqs = await mine.query("SELECT pseq FROM passages ORDER BY pseq")
            assert [r[0] for r in seqs] == list(range(1, 41))  # one agent's sequence: no gap, no repeat
            assert await theirs.delete_passage(a, ids[0])  # a delete: the copy reloads
            hits = await mine.vectors.search(VectorQuery(a, q, top_k=40))
            assert ids[0] not in [h.passage_id for h in hits] and len(hits) == 39
            assert mine.vectors.stats["reloads"] == 2
            with pytest.raises(DimensionMismatchError, match="16"):
                await mine.vectors.search(VectorQuery(a, _unit(rng, 1, dim=8)[0]))
        finally:
            await mine.close()
            await theirs.close()

    run(main())


def test_uploads_replace_files_whole_and_a_stale_fence_writes_nothing(url):
    rng = np.random.default_rng(3)

    async def main() -> None:
        store = await Store.open(url)
        try:
            (a,) = await agents(store, "a")
            grant = await store.writer.submit(lambda c: leases.acquire(c, a, "me", 1, "h", 0.0, 60.0, 5.0))
            now = utcnow()

            def update(n: int) -> tuple[FileRecord, FilePassages]:
                file = FileRecord(new_id("file"), a, "/docs/x.md", f"hash{n}", 10, n, "md", now, now)
                return file, FilePassages([new_id("passage") for _ in range(n)], [f"c{i}" for i in range(n)],
                                          _unit(rng, n), a, "hash", ["doc"], now)

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, store.file_writer.replace_files, [update(5)], (a, grant.token))
            await loop.run_in_executor(None, store.file_writer.replace_files, [update(3)], (a, grant.token))
            with pytest.raises(StaleCommitError):
                await loop.run_in_executor(None, store.file_writer.replace_files, [update(7)], (a, grant.token + 1))
            texts = sorted(p.text for p in await store.list_passages(a))
            assert texts == ["c0", "c1", "c2"]  # the second upload replaced the first; the stale one wrote nothing
            assert (await store.list_passages(a))[0].tags == ("doc",)
        finally:
            await store.close()

    run(main())


def test_a_cancelled_turn_leaves_no_connection_idle_in_a_transaction(url, pg_server):
    with letta_nb.connect(url) as client:
        agent = client.agents.create("sam", model=SLOW)
        events = []
        for event in client.agents.messages.stream(agent, "Tell me a long story about the sea."):
            events.append(event)
            if isinstance(event, AssistantDelta) and len(events) < 100:
                assert client.agents.messages.cancel(agent) is True
        assert isinstance(events[-1], StopEvent) and events[-1].stop_reason == "cancelled"
        assert client.agents.messages.create(agent, "hello again").text  # the agent still works
        setting = client.query("SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
        assert int(setting.iloc[0, 0]) == IDLE_IN_TRANSACTION_MS
        stuck = pg_server.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'letta_nb' "
                                "AND state LIKE 'idle in transaction%'")
        assert stuck[0][0] == 0
        msgs = client.agents.messages.list(agent)
        assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
