"""Uploaded files and their passages: a file's row and passages change in one transaction, so a file is
all there or absent.

A ``files`` row says which content (sha256), chunking and embedder an agent's passages from one path
came from. :func:`replace_files` swaps a file's passages and its row inside one write transaction, so
after a crash (SIGKILL included) a file has either its old passages and row, or its new ones, never a
mix or a duplicate, and re-running the upload redoes exactly the files that did not commit. The vector
index follows the passage rows inside that same transaction (see vector.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
import sqlalchemy as sa

from letta_nb.store.checkpointer import Checkpointer, writer_connection
from letta_nb.store.engine import WRITE
from letta_nb.store.migrations import METADATA
from letta_nb.store.sqlite_driver import write_transaction
from letta_nb.store.step_writer import DT_FORMAT, insert_rows

__all__ = ["file_records", "replace_files", "delete_file", "FilePassages", "FileUpdate", "FileWriter"]

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


@dataclass
class FilePassages:
    """A file's passages as columns: they share agent, embedder, tags, time and file id, so only ids,
    texts and vectors vary (``vectors``: float32 rows, in the order of ``texts``)."""

    ids: list[str]
    texts: list[str]
    vectors: np.ndarray
    agent_id: str
    embedding_model: str
    tags: list[str]
    created_at: dt.datetime


# One statement inserts every passage of a file: SQLite loops over the rows (and runs the vector-table
# triggers) without coming back to Python, so the writer thread never queues for the GIL between rows.
# Row-by-row executemany took ~180 us a row here while the loop embedded the next file (each row waits
# out the GIL's 5 ms switch interval now and then), ~55 us alone; this takes the SQLite work only.
_INSERT_FILE_PASSAGES = (
    "INSERT INTO passages (id, agent_id, text, embedding, embedding_model, tags, created_at, file_id) "
    "SELECT j.value ->> 0, :agent_id, j.value ->> 1, substr(:vectors, j.key * :nbytes + 1, :nbytes), "
    ":embedding_model, :tags, :created_at, :file_id FROM json_each(:rows) AS j ORDER BY j.key"
)


FileUpdate = tuple[dict[str, Any], "FilePassages | None"]  # (files row, its passages)


async def replace_files(store: Any, updates: list[FileUpdate]) -> None:
    """Make each ``(file_row, passages)`` its file's whole record (keyed by agent and path), all in one
    transaction: a file is all there or absent, whatever happens.

    Runs on a worker thread with a raw connection (see :class:`FileWriter`); once started it finishes
    even if the upload is cancelled. Uploads hand over every file embedded while the previous
    transaction ran: small files share a commit (each commit rewrites the index and vector-table pages
    it touched, ~60 pages a file when each had its own)."""
    rows = sum(1 + (len(p.ids) if p is not None else 0) for _, p in updates)
    await asyncio.to_thread(functools.partial(store.file_writer.run, _replace_files, updates, rows=rows))


def _replace_files(conn: Any, updates: list[FileUpdate]) -> None:
    with write_transaction(conn) as cursor:
        for file_row, passages in updates:
            _replace_file(cursor, file_row, passages)


def _replace_file(cursor: Any, file_row: dict[str, Any], passages: FilePassages | None) -> None:
    old = [r[0] for r in cursor.execute("SELECT id FROM files WHERE agent_id = ? AND path = ?",
                                        (file_row["agent_id"], file_row["path"]))]
    if old:
        marks = ", ".join("?" * len(old))
        cursor.execute(f"DELETE FROM passages WHERE agent_id = ? AND file_id IN ({marks})", (file_row["agent_id"], *old))
        cursor.execute(f"DELETE FROM files WHERE id IN ({marks})", old)
    insert_rows(cursor, "files", [file_row])
    if passages is not None and passages.ids:
        vectors = np.ascontiguousarray(passages.vectors, dtype=np.float32)
        cursor.execute(_INSERT_FILE_PASSAGES, {
            "agent_id": passages.agent_id, "embedding_model": passages.embedding_model,
            "tags": json.dumps(passages.tags), "created_at": passages.created_at.strftime(DT_FORMAT),
            "file_id": file_row["id"], "vectors": vectors.tobytes(), "nbytes": vectors.shape[1] * 4,
            # orjson: json.dumps(ensure_ascii=False) spent ~6 ms a MB of text on this thread's GIL. Text, not
            # bytes: SQLite reads a BLOB argument to json_each as JSONB.
            "rows": orjson.dumps(list(zip(passages.ids, passages.texts))).decode(),
        })


class FileWriter:
    """The connection uploads write through: raw DB-API statements on a worker thread.

    Through SQLAlchemy's async engine a passage row cost ~240 us (statement compilation, a greenlet hop
    per call); as one raw statement a file (``_INSERT_FILE_PASSAGES``) it is the SQLite work itself, the
    passage triggers included (version counters only, see sqlite_vec.py). Running on a thread
    lets SQLite, which releases the GIL, write some files while the runtime loop embeds the next. One
    connection, one writer at a time (uploads commit in input order).
    """

    def __init__(self, path: str, checkpointer: Checkpointer, busy_timeout_ms: int = 10_000):
        self._path, self._busy_timeout_ms = path, busy_timeout_ms
        self.checkpointer = checkpointer  # WAL checkpoints happen there, not inside an upload's COMMIT
        self._conn: Any = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., R], *args: Any, rows: int = 1) -> R:
        """``fn(connection, *args)`` on this thread; ``rows``: how many it writes (for the checkpointer)."""
        with self._lock:
            if self._conn is None:
                self._conn = writer_connection(self._path, self._busy_timeout_ms)
            result = fn(self._conn, *args)
            self.checkpointer.wrote(rows)
            return result

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
