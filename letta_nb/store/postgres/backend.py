"""The PostgreSQL backend put together: its asyncpg connections and the objects the store hands the runtime.

Connections: one for the step writer and one for lease peeks (each kept hot; opened again if lost;
postgres/peeks.py), and a small pool for lease reads,
vector refreshes, uploads and read-only queries, all with ``idle_in_transaction_session_timeout`` and the
JSON codec. The SQLAlchemy engine (engine.py) has its own pool for the portable reads; ``probes.pool()``
shows both (``pool`` column: sqlalchemy | asyncpg). Pool size per kernel: ``LETTA_NB_PG_POOL`` connections
here (default 4) plus the engine's, the two above, plus one LISTEN connection while something subscribes
(notices.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import asyncpg

from letta_nb.errors import InvalidArgumentError, StoreError
from letta_nb.store.engine import IDLE_IN_TRANSACTION_MS, StoreLocation
from letta_nb.store.postgres import leases, pgvector
from letta_nb.store.postgres.file_writer import PgFileWriter
from letta_nb.store.postgres.group_commit import jsonb_text
from letta_nb.store.postgres.notices import LISTENER_NAME, PgNotices
from letta_nb.store.postgres.peeks import warm_connection
from letta_nb.store.postgres.step_writer import PgStepWriter
from letta_nb.store.postgres.vectors import PgVectorStore
from letta_nb.telemetry.pool import AsyncpgPoolMonitor

__all__ = ["PgBackend", "open_backend", "dsn"]

_SETTINGS = {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS), "application_name": "letta_nb"}
# The step writer runs the same few prepared statements all day: planning the one-statement group commit
# took 0.34 ms of its 0.7 (EXPLAIN ANALYZE), re-done for every custom plan; a generic plan is made once.
_WRITER_SETTINGS = {**_SETTINGS, "plan_cache_mode": "force_generic_plan"}


def dsn(location: StoreLocation) -> str:
    """The libpq-style DSN asyncpg takes, from the store's SQLAlchemy URL."""
    import sqlalchemy as sa

    return sa.make_url(location.url).set(drivername="postgresql").render_as_string(hide_password=False)


def _jsonb(value: Any) -> bytes:
    # jsonb refuses a lone surrogate's \ud800 escape (SQLite's TEXT keeps it): made U+FFFD, the project's one
    # policy for text that is not valid Unicode (letta_nb/_text.py); clean values pass through uncopied.
    return b"\x01" + jsonb_text(value).encode()


async def _keep_session(conn: Any) -> None:
    """The pool's ``reset``: nothing. asyncpg's default runs ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` on every release, a round trip that was two of a step's eleven (the lease peeks at turn start
    and end). Our own uses of the pool change no session state (settings are ``SET LOCAL``); an open
    transaction is still rolled back by asyncpg before this runs, and :meth:`PgBackend.query` (users' SQL)
    resets its connection itself."""


async def _init(conn: Any) -> None:
    # Binary jsonb (a version byte, then the text) and vector: COPY (uploads) needs binary codecs.
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="binary", encoder=_jsonb,
                              decoder=lambda b: json.loads(b[1:]))
    await pgvector.register(conn)


@dataclass
class PgBackend:
    writer: PgStepWriter
    vectors: PgVectorStore
    file_writer: PgFileWriter
    pool: Any
    notices: PgNotices
    pool_monitor: AsyncpgPoolMonitor  # probes.pool()'s asyncpg rows
    lease_rows: Any = leases

    async def query(self, sql: Any, params: Any = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(columns, rows) of one statement in a READ ONLY transaction; ``$1``-style params."""
        if not isinstance(sql, str):
            raise InvalidArgumentError(f"client.query: sql must be a string of SQL, got {type(sql).__name__}")
        if params is not None and not isinstance(params, (list, tuple)):
            raise InvalidArgumentError("client.query: params must be a list or tuple (for $1, $2, ...) on "
                                       f"PostgreSQL, got {type(params).__name__}")
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction(readonly=True):
                    statement = await conn.prepare(sql)
                    rows = await statement.fetch(*(params or ()))
            except asyncpg.PostgresError as e:
                raise InvalidArgumentError(f"client.query: PostgreSQL rejected the SQL: {e}. Only reads run "
                                           "here (SELECT, WITH); change data through the API.") from None
            finally:  # users' SQL may set session state (set_config, advisory locks): the pool does not reset
                await conn.reset()
            return [a.name for a in statement.get_attributes()], [tuple(r) for r in rows]

    async def close(self) -> None:
        await self.writer.drain()
        self.writer.close()
        await self.notices.close()
        await self.vectors.close()
        self.file_writer.close()
        await self.pool.close()


def _pool_size() -> int:
    raw = os.environ.get("LETTA_NB_PG_POOL", "4")
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidArgumentError(f"LETTA_NB_PG_POOL={raw!r}: expected a positive number of connections, e.g. 4")
    return int(raw)


async def open_backend(location: StoreLocation) -> PgBackend:
    """Open the backend's connections on the running loop (the runtime's)."""
    target = dsn(location)

    async def connect() -> Any:  # with its codecs; closed if that fails or is cancelled (a store closed early)
        return await warm_connection(lambda: asyncpg.connect(target, server_settings=_WRITER_SETTINGS), _init)

    try:
        raw = await asyncpg.create_pool(target, min_size=1, max_size=_pool_size(), init=_init,
                                        reset=_keep_session, server_settings=_SETTINGS)
    except (OSError, asyncpg.PostgresError) as e:
        raise StoreError(f"could not connect to the store {location.display!r}: {e}. Check that the server "
                         "runs and the URL's user, host and database are right.") from None

    def listener() -> Any:  # the notices' LISTEN connection: its own, outside the pool
        return asyncpg.connect(target, server_settings={**_SETTINGS, "application_name": LISTENER_NAME})

    loop = asyncio.get_running_loop()
    pool = AsyncpgPoolMonitor(raw)  # the pool everything here uses: probes.pool() sees each checkout
    writer = PgStepWriter(connect, pool)
    writer.warm()
    return PgBackend(writer, PgVectorStore(pool), PgFileWriter(pool, loop), pool, PgNotices(listener, pool, loop),
                     pool)
