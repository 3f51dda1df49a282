"""A read of a store file on a fresh raw connection, the way another process would see it.

It uses the store's own sqlite module: opening the file with a second SQLite library in one process
(the stdlib's, when the store runs on pysqlite3) breaks SQLite's POSIX locks.
"""

from __future__ import annotations

from letta_nb.store.sqlite_driver import connect_raw


def query(path: str, sql: str, *params: object) -> list[tuple]:
    conn = connect_raw(path, vec=False)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
