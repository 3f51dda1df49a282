"""Uploaded files and their passages: one transaction per file, so a file is all there or absent.

A ``files`` row says which content (sha256), chunking and embedder an agent's passages from one path
came from. :func:`replace_file` swaps a file's passages and its row in a single write transaction, so
after a crash (SIGKILL included) a file has either its old passages and row, or its new ones, never a
mix or a duplicate, and re-running the upload redoes exactly the files that did not commit. The vector
index follows the passage rows inside that same transaction (see vector.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from letta_nb.store.engine import WRITE
from letta_nb.store.migrations import METADATA
from letta_nb.store.sqlite_driver import connect_raw
from letta_nb.store.step_writer import insert_rows

__all__ = ["file_records", "replace_file", "delete_file", "FileWriter"]

T = METADATA.tables
R = TypeVar("R")


async def file_records(store: Any, agent_id: str, paths: list[str] | None = None) -> dict[str, Any]:
    """path -> files row for the agent (only ``paths`` when given)."""
    f = T["files"]
    q = sa.select(f).where(f.c.agent_id == agent_id).order_by(f.c.path)
    if paths is not None:
        if not paths:
            return {}
        q = q.where(f.c.path.in_(paths))
    async with store.engine.connect() as conn:
        return {r.path: r for r in await conn.execute(q)}


async def replace_file(store: Any, file_row: dict[str, Any], passages: list[dict[str, Any]]) -> None:
    """Make ``file_row`` (keyed by agent and path) and ``passages`` the file's whole record, atomically.

    Runs on a worker thread with a raw connection (see :class:`FileWriter`): once started it finishes
    even if the upload is cancelled, so the file is all there or absent."""
    await asyncio.to_thread(store.file_writer.run, _replace_file, file_row, passages)


def _replace_file(conn: Any, file_row: dict[str, Any], passages: list[dict[str, Any]]) -> None:
    cursor = conn.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        old = [r[0] for r in cursor.execute("SELECT id FROM files WHERE agent_id = ? AND path = ?",
                                            (file_row["agent_id"], file_row["path"]))]
        if old:
            marks = ", ".join("?" * len(old))
            cursor.execute(f"DELETE FROM passages WHERE agent_id = ? AND file_id IN ({marks})", (file_row["agent_id"], *old))
            cursor.execute(f"DELETE FROM files WHERE id IN ({marks})", old)
        insert_rows(cursor, "files", [file_row])
        insert_rows(cursor, "passages", passages)
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()


class FileWriter:
    """The connection uploads write through: raw DB-API ``executemany`` on a worker thread.

    Through SQLAlchemy's async engine a passage row cost ~240 us (statement compilation, a greenlet hop
    per call); as prepared ``executemany`` it is the SQLite work itself, the passage triggers keeping the
    vector tables in step included (so sqlite-vec is loaded). Running on a thread lets SQLite, which
    releases the GIL, write one file while the runtime loop embeds the next. One connection, one writer
    at a time (uploads commit file by file, in order).
    """

    def __init__(self, path: str, busy_timeout_ms: int = 10_000):
        self._path, self._busy_timeout_ms = path, busy_timeout_ms
        self._conn: Any = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., R], *args: Any) -> R:
        with self._lock:
            if self._conn is None:
                self._conn = connect_raw(self._path, busy_timeout_ms=self._busy_timeout_ms)
            return fn(self._conn, *args)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


async def delete_file(store: Any, agent_id: str, path: str) -> int | None:
    """Delete the file's passages and record; the number of passages removed, None if there was no such file."""
    f, p = T["files"], T["passages"]
    async with store.engine.execution_options(**WRITE).begin() as conn:
        ids = (await conn.execute(sa.select(f.c.id).where(f.c.agent_id == agent_id, f.c.path == path))).scalars().all()
        if not ids:
            return None
        removed = await conn.execute(p.delete().where(p.c.agent_id == agent_id, p.c.file_id.in_(ids)))
        await conn.execute(f.delete().where(f.c.id.in_(ids)))
        return removed.rowcount
