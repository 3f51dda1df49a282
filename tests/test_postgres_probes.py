"""probes.leases() and probes.pool() on PostgreSQL (with and without Redis) and on SQLite.

``probes.leases()`` says where the leases live (``backend``: redis, postgres or sqlite lease rows), and on
PostgreSQL ``probes.pool()`` shows the asyncpg pool of the raw step path (lease peeks, vector refreshes,
uploads) beside SQLAlchemy's: checkouts with their latency, checkins with how long each connection was held,
and the pool's size and use after each, checked against connections this test holds itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from agent_helpers import on_loop, wait_until

import letta_nb
from letta_nb import probes
from letta_nb.errors import InvalidArgumentError


def test_leases_probe_names_the_lease_backend(tmp_path, pg_store_url, redis_server):
    redis_server.restart()
    for url, kwargs, backend in ((tmp_path / "s.db", {}, "sqlite"), (pg_store_url, {}, "postgres"),
                                 (pg_store_url, {"redis_url": redis_server.url}, "redis")):
        with letta_nb.connect(url, **kwargs) as c:
            agent = c.agents.create(f"a_{backend}", model="offline")
            c.agents.messages.create(agent.id, "hi")
            df = probes.leases(c)
            mine = df[df.agent_id == agent.id]
            assert "acquired" in mine.event.tolist(), backend
            assert mine.backend.unique().tolist() == [backend]
            assert str(df.backend.dtype) == "string"


async def _hold(pool: Any, at_once: int) -> None:
    held = [pool.acquire() for _ in range(at_once)]
    conns = [await h.__aenter__() for h in held]
    for conn in conns:
        assert await conn.fetchval("SELECT 1") == 1
    for h in held:
        await h.__aexit__(None, None, None)


def test_pool_probe_shows_the_asyncpg_pool_on_postgres(pg_store_url, monkeypatch):
    monkeypatch.setenv("LETTA_NB_PG_POOL", "5")
    with letta_nb.connect(pg_store_url) as c:
        agent = c.agents.create("a", model="offline")
        c.agents.messages.create(agent.id, "hi")  # a turn on PostgreSQL checks out asyncpg pool connections too
        df = probes.pool(c)
        assert set(df.pool.unique()) == {"sqlalchemy", "asyncpg"}
        assert df.time.is_monotonic_increasing

        # the turn's last pool uses (its end's peek, its change notice) are over once the lease is given up
        wait_until(lambda: not c.runtime.leases.held and c.runtime.store.notices.idle, "the turn to settle")
        probes.reset(c)
        assert probes.pool(c).query("pool == 'asyncpg'").empty
        on_loop(c, _hold(c.runtime.store.writer._pool, 3))
        pg = probes.pool(c).query("pool == 'asyncpg'").reset_index(drop=True)
        checkouts, checkins = pg[pg.event == "checkout"], pg[pg.event == "checkin"]
        assert len(checkouts) == 3 and len(checkins) == 3
        assert checkouts.checkout_latency_ms.notna().all() and (checkouts.checkout_latency_ms >= 0).all()
        assert checkins.held_ms.notna().all() and checkins.checkout_latency_ms.isna().all()
        assert pg.checked_out.max() == 3 and pg.checked_out.iloc[-1] == 0
        assert (pg.capacity == 5).all()
        assert pg.utilisation.max() == pytest.approx(3 / 5)
        assert pg.connection.nunique() == 3 and (pg.connection > 0).all()  # three server connections
        fig = probes.plot_pool(c, which="asyncpg")
        assert max(fig.axes[0].get_lines()[0].get_ydata()) == 3


def test_pool_probe_on_sqlite_has_only_the_sqlalchemy_pool(tmp_path):
    with letta_nb.connect(tmp_path / "s.db") as c:
        c.agents.create("a", model="offline")
        df = probes.pool(c)
        assert not df.empty and df.pool.unique().tolist() == ["sqlalchemy"]
        with pytest.raises(InvalidArgumentError, match="sqlalchemy' or 'asyncpg'"):
            probes.plot_pool(c, which="pg")
