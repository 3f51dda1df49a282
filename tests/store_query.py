"""A read of a store file on a fresh raw connection, the way another process would see it.

It uses the store's own sqlite module: opening the file with a second SQLite library in one process
(the stdlib's, when the store runs on pysqlite3) breaks SQLite's POSIX locks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from letta_nb.store.sqlite.driver import connect_raw


def query(path: str, sql: str, *params: object) -> list[tuple]:
    """Rows of ``sql`` (``?`` placeholders) on the store at ``path``: a SQLite file, or a PostgreSQL URL (the
    ``--backend postgres`` runs, see conftest.py), read on a fresh connection."""
    if "://" in str(path):
        from letta_nb.testing.pgserver import SyncConnection

        return SyncConnection(str(path)).execute(sql, params).fetchall()
    conn = connect_raw(path, vec=False)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(path: str | Path, table: str, agent_id: str | None = None) -> int:
    """Rows of ``table`` (of one agent, when given)."""
    if agent_id is None:
        return query(str(path), f"SELECT count(*) FROM {table}")[0][0]
    return query(str(path), f"SELECT count(*) FROM {table} WHERE agent_id = ?", agent_id)[0][0]


def table_counts(path: str | Path) -> dict[str, int]:
    """Rows per table of the store's user data: compare before and after a call that must write nothing."""
    return {t: count(path, t) for t in ("agents", "blocks", "messages", "tools", "agent_tools", "passages", "steps")}




def old_store(path: Path, before: str, fill: Callable[[Any], None]) -> None:
    """A SQLite store at ``path`` migrated up to (not including) migration ``before``, then filled by ``fill(conn)``
    in one transaction: a store as an earlier letta_nb left it, to open with this one."""
    import sqlalchemy as sa

    from letta_nb.store.migrations import MIGRATIONS, migrate
    from letta_nb.store.sqlite.driver import sqlite_module

    engine = sa.create_engine("sqlite://", module=sqlite_module(), creator=lambda: connect_raw(str(path)),
                              poolclass=sa.pool.NullPool)
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    try:
        with engine.connect() as conn:
            migrate(conn, target=[m.__name__ for m in MIGRATIONS].index(before))
        with engine.begin() as conn:
            fill(conn)
    finally:
        engine.dispose()


def insert_old_agent(conn: Any, last_seq: int, now: str) -> None:
    """The agent ``agent-old`` (named "old") of an :func:`old_store` fill, its messages up to ``last_seq``."""
    conn.exec_driver_sql(
        "INSERT INTO agents (id, name, model, embedding, system, max_steps, metadata, last_seq, created_at, "
        "updated_at) VALUES ('agent-old', 'old', 'offline', 'hash', 's', 10, '{}', ?, ?, ?)", (last_seq, now, now))
