"""The PostgreSQL step path's round trips (issue 12, ``bench step --backend postgres``): a group of plain step
commits is one statement, lease peeks that arrive together are one query, and the pool does not pay a
session reset per checkout -- each with the same answers as the slower path it replaced.

Round trips are counted with asyncpg's query logger on the real connections, not timed.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

import letta_nb
from letta_nb.errors import StaleCommitError
from letta_nb.llm.base import ToolCall
from letta_nb.store.backend import Grant, StepWrite
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.postgres import leases
from letta_nb.store.records import StepRecord
from letta_nb.store.store import Store
from tests.test_postgres import agents


@pytest.fixture
def url(pg_server: Any) -> Any:
    name = pg_server.create_database(pg_server.migrated_template())
    yield pg_server.url(name)
    pg_server.drop_database(name)


async def grant(store: Store, agent_id: str) -> Grant:
    result = await store.writer.submit(lambda c: leases.acquire(c, agent_id, "me", 1, "h", time.time(), 60.0, 5.0))
    assert isinstance(result, Grant)
    return result


def step_write(agent_id: str, fence: tuple[int, int], until: float, text: str) -> StepWrite:
    call = ToolCall(id="call_1", name="send_message", arguments='{"message": "hi \ud800"}')  # a lone surrogate
    messages = [letta_nb.Message(id=new_id("message"), agent_id=agent_id, seq=fence[1] + 1, role="user", content=text,
                                 created_at=utcnow()),
                letta_nb.Message(id=new_id("message"), agent_id=agent_id, seq=fence[1] + 2, role="assistant",
                                 content="", tool_calls=(call,), created_at=utcnow())]
    step = StepRecord(new_id("step"), agent_id, "run-1", 0, "offline", 2, 3, 4, 0.5, 0.25, 1.0, "end_turn", utcnow())
    return StepWrite(agent_id, messages=messages, step=step, last_seq=fence[1] + 2, context_start_seq=1,
                     context_summary="summary", fence=fence, lease_until=until)


def test_a_group_of_plain_steps_is_one_statement_and_lands_whole(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            a, b, c, d = await agents(store, "a", "b", "c", "d")
            ga, gb, gc, gd = [await grant(store, x) for x in (a, b, c, d)]
            until = time.time() + 1000.0
            await store.writer.submit(step_write(d, (gd.token, 0), until, "warm-up"))  # asyncpg learns the types
            statements: list[str] = []
            store.writer._conn.add_query_logger(lambda q: statements.append(q.query))
            futures = [store.writer.submit(step_write(a, (ga.token, 0), until, "to a")),
                       store.writer.submit(step_write(b, (gb.token + 1, 0), until, "stale token")),
                       store.writer.submit(step_write(c, (gc.token, 5), until, "stale last_seq"))]
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert isinstance(results[0], float)
            assert isinstance(results[1], StaleCommitError) and isinstance(results[2], StaleCommitError)
            assert len(statements) == 1 and "BEGIN" not in statements[0].upper()  # one round trip, no BEGIN/COMMIT

            rows = await store.load_messages(a)
            assert [m.content for m in rows] == ["to a", ""]
            assert rows[1].tool_calls[0].name == "send_message"
            assert rows[1].tool_calls[0].arguments == '{"message": "hi \ufffd"}'  # jsonb's policy (backend._jsonb)
            assert await store.load_messages(b) == [] and await store.load_messages(c) == []
            agent_a = await store.load_agent(a)
            assert (agent_a.last_seq, agent_a.context_start_seq, agent_a.context_summary) == (2, 1, "summary")
            assert (await store.load_agent(c)).last_seq == 0
            _, leases_rows = await store.query("SELECT agent_id, expires_at FROM agent_leases")
            expiry = dict(leases_rows)
            assert expiry[a] == pytest.approx(until)  # renewed with the commit ...
            assert expiry[c] < until - 500  # ... and only where the commit landed (c's token held, last_seq not)
            _, steps = await store.query("SELECT agent_id, stop_reason, total_ms FROM steps WHERE agent_id <> $1", [d])
            assert steps == [(a, "end_turn", 1.0)]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_burst_of_lease_peeks_is_one_query_with_the_answers_of_single_peeks(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            ids = await agents(store, *(f"p{i}" for i in range(6)))
            await grant(store, ids[0])
            queued = await store.writer.submit(lambda c: leases.acquire(c, ids[0], "other", 2, "h2", time.time(),
                                                                        60.0, 5.0))
            assert not isinstance(queued, Grant)  # "other" waits for ids[0]: its peek shows a waiter
            now = time.time()
            asked = [*ids, "agent-missing", ids[0]]
            before = store.writer.peeks.queries
            batched = await asyncio.gather(*(store.writer.read(functools.partial(leases.peek, agent_id=x, now=now))
                                             for x in asked))
            assert store.writer.peeks.queries - before == 1
            async with store._backend.pool.acquire() as conn:
                single = [await leases.peek(conn, x, now) for x in asked]
            assert batched == single
            assert batched[0][6] is True and batched[1][6] is False and batched[len(ids)] is None
            # a peek far in the future: the waiter's ticket has expired by then
            late = await store.writer.read(functools.partial(leases.peek, agent_id=ids[0], now=now + 3600))
            assert late[6] is False
        finally:
            await store.close()

    asyncio.run(main())


def test_pooled_reads_skip_the_session_reset_but_users_sql_cannot_leave_settings_behind(url):
    async def main() -> None:
        store = await Store.open(url)
        try:
            pool = store._backend.pool
            statements: list[str] = []
            async with pool.acquire() as conn:
                conn.add_query_logger(lambda q: statements.append(q.query))
                await conn.fetchval("SELECT 1")
            assert not any("RESET ALL" in s for s in statements)  # a checkout costs no extra round trip
            for _ in range(pool.get_max_size() + 1):  # every pooled connection has had the user's SQL
                await store.query("SELECT set_config('statement_timeout', '4321', false)")
            for _ in range(pool.get_max_size() + 1):
                _, rows = await store.query("SELECT current_setting('statement_timeout')")
                assert rows[0][0] != "4321ms"
        finally:
            await store.close()

    asyncio.run(main())
