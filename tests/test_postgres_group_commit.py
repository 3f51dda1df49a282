"""Round trips of the PostgreSQL step path under concurrency (issue 12, ``bench concurrency --backend postgres``):
a group of many agents' plain step commits is one statement on the writer's connection, lease peeks do not
queue behind a batch in flight while a second connection is free, and a lone peek pays no pool checkout: it
goes on the batcher's own connection, opened again after it was lost (postgres/peeks.py).

Round trips are counted on the real connections (asyncpg's query logger, or a gate around a real pool whose
queries wait until the test lets them go), never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from letta_nb.store.postgres import leases
from letta_nb.store.postgres.peeks import IN_FLIGHT, PeekBatcher
from letta_nb.store.postgres.step_writer import PgStepWriter
from letta_nb.store.store import Store
from tests.test_pg_step_path import grant, step_write
from tests.test_postgres import agents


@pytest.fixture
def url(pg_server: Any) -> Any:
    name = pg_server.create_database(pg_server.migrated_template())
    yield pg_server.url(name)
    pg_server.drop_database(name)


def test_twenty_agents_steps_submitted_together_are_one_round_trip_and_all_land(url: str) -> None:
    async def main() -> None:
        store = await Store.open(url)
        try:
            *ids, warm = await agents(store, *(f"g{i}" for i in range(21)))
            grants = [await grant(store, a) for a in ids]
            until = time.time() + 1000.0
            g = await grant(store, warm)
            await store.writer.submit(step_write(warm, (g.token, 0), until, "warm-up"))  # asyncpg learns the types
            statements: list[str] = []
            store.writer._conn.add_query_logger(lambda q: statements.append(q.query))
            futures = [store.writer.submit(step_write(a, (g.token, 0), until, f"to {a}"))
                       for a, g in zip(ids, grants, strict=True)]
            results = await asyncio.gather(*futures)
            assert all(isinstance(ms, float) for ms in results)
            assert len(statements) == 1  # 20 steps, 40 messages: one statement, no BEGIN/COMMIT
            for a in ids:
                assert [m.content for m in await store.load_messages(a)] == [f"to {a}", ""]
                assert (await store.load_agent(a)).last_seq == 2
        finally:
            await store.close()

    asyncio.run(main())


class _GatedPool:
    """A real asyncpg pool whose queries wait at a gate until the test opens it; counts queries in flight."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.gate = asyncio.Event()
        self.entered = asyncio.Condition()
        self.out = self.most_out = self.queries = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            yield _GatedConnection(self, conn)

    async def run(self, call: Any) -> Any:
        async with self.entered:
            self.out += 1
            self.queries += 1
            self.most_out = max(self.most_out, self.out)
            self.entered.notify_all()
        try:
            await self.gate.wait()
            return await call()
        finally:
            self.out -= 1

    async def until_out(self, n: int) -> None:
        async with self.entered:
            await self.entered.wait_for(lambda: self.out >= n)


class _GatedConnection:
    def __init__(self, gated: _GatedPool, conn: Any):
        self._gated, self._conn = gated, conn

    async def fetch(self, *args: Any) -> Any:
        return await self._gated.run(functools.partial(self._conn.fetch, *args))

    async def fetchrow(self, *args: Any) -> Any:
        return await self._gated.run(functools.partial(self._conn.fetchrow, *args))


def test_a_peek_does_not_queue_behind_a_batch_in_flight_and_a_burst_beyond_that_is_one_query(url: str) -> None:
    async def main() -> None:
        store = await Store.open(url)
        gated: _GatedPool | None = None
        try:
            ids = await agents(store, *(f"p{i}" for i in range(6)))
            await grant(store, ids[0])
            gated = _GatedPool(store._backend.pool)
            batcher = PeekBatcher(gated)
            now = time.time()
            first = batcher.peek(ids[0], now)
            await gated.until_out(1)
            second = batcher.peek(ids[1], now)  # the first is out: this one goes at once on another connection
            await asyncio.wait_for(gated.until_out(2), 30)  # a guard against hanging, not a timing
            assert IN_FLIGHT == 2
            burst = [batcher.peek(a, now) for a in [*ids[2:], "agent-missing", ids[0]]]  # two out: these wait
            for _ in range(3):
                await asyncio.sleep(0)  # a pass of the loop: nothing more may leave while two are out
            assert gated.queries == 2
            gated.gate.set()
            answers = await asyncio.gather(first, second, *burst)
            assert gated.queries == 3 and gated.most_out == 2  # the waiting burst left as one query
            assert batcher.queries == 3 and batcher.peeks == 2 + len(burst)
            async with store._backend.pool.acquire() as conn:
                single = [await leases.peek(conn, a, now) for a in [*ids[:2], *ids[2:], "agent-missing", ids[0]]]
            assert answers == single
            held, free = answers[0], answers[1]
            assert held is not None and held[1] == "me" and free is not None and free[1] is None
            assert answers[len(ids)] is None  # no such agent
            assert not batcher._tasks  # every drain ended
            late = await batcher.peek(ids[1], now)  # and a later peek still gets a drain
            assert late == single[1]
        finally:
            if gated is not None:
                gated.gate.set()  # a failed check leaves no query parked on its pooled connection
            await store.close()

    asyncio.run(main())


class _CountingPool:
    """A real asyncpg pool that counts checkouts."""

    def __init__(self, pool: Any):
        self.pool = pool
        self.checkouts = 0

    def acquire(self) -> Any:
        self.checkouts += 1
        return self.pool.acquire()


def test_lone_peeks_go_on_the_batchers_own_connection_which_comes_back_after_being_killed(url: str) -> None:
    async def main() -> None:
        store = await Store.open(url)
        try:
            a, b = await agents(store, "a", "b")
            await grant(store, a)
            await store.writer.warmed()  # while the store's warm-up holds the own connection, peeks use the pool
            batcher = store.writer.peeks
            counting = batcher._pool = _CountingPool(batcher._pool)
            now = time.time()
            answers = [await batcher.peek(x, now) for x in (a, b, a, "agent-missing")]
            assert counting.checkouts == 0 and batcher.queries == 4  # a checkout and checkin each, saved
            async with counting.pool.acquire() as conn:
                assert answers == [await leases.peek(conn, x, now) for x in (a, b, a, "agent-missing")]
                pid = await batcher._own.fetchval("SELECT pg_backend_pid()")
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            for _ in range(1000):  # wait for the client to see its connection closed (a condition, not a time)
                if batcher._own.is_closed():
                    break
                await asyncio.sleep(0.01)
            assert await batcher.peek(a, now) == answers[0]  # opened again
            assert counting.checkouts == 0 and await batcher._own.fetchval("SELECT pg_backend_pid()") != pid
            while batcher._tasks:  # the last drain answered its peek but has not ended yet: it still counts in flight
                await asyncio.sleep(0)

            first = batcher.peek(a, now)
            await asyncio.sleep(0)  # one pass of the loop: the first drain sent its query on the own connection
            assert batcher._own_busy
            second = batcher.peek(b, now)  # one is out: this one goes at once, on a pooled connection
            assert await asyncio.gather(first, second) == answers[:2] and counting.checkouts == 1
        finally:
            await store.close()
        assert store.writer.peeks._own is None  # closed with the store

    asyncio.run(main())


def test_peeks_during_the_warm_up_go_on_pooled_connections_then_on_the_batchers_own(url: str) -> None:
    """While the store's warm-up is opening the peek batcher's own connection, a turn's peek does not wait for
    it: it goes on a pooled connection; once warm, peeks go on the batcher's own."""
    async def main() -> None:
        store = await Store.open(url)
        try:
            (a,) = await agents(store, "a")
            gate = asyncio.Event()
            real = store.writer._connect

            async def slow() -> Any:  # a connection that opens only when the test says so
                await gate.wait()
                return await real()

            writer = PgStepWriter(slow, store._backend.pool)
            writer.warm()
            counting = writer.peeks._pool = _CountingPool(writer.peeks._pool)
            row = await writer.peeks.peek(a, time.time())
            assert row is not None and row[3] == 0 and counting.checkouts == 1 and writer.peeks._own is None
            gate.set()
            await writer.warmed()
            assert writer.peeks._own is not None
            assert await writer.peeks.peek(a, time.time()) == row and counting.checkouts == 1  # its own, now
            writer.close()
        finally:
            await store.close()

    asyncio.run(main())
