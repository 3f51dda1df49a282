"""The SQLite file writer: an upload's files and passages as raw DB-API statements on a worker thread.

:func:`letta_nb.store.files.replace_files` hands each batch of embedded files here. One write transaction
replaces every file of the batch (old passages and row out, new row and passages in), so a file is all
there or absent after a crash. A file's passages go in as one ``INSERT ... SELECT FROM json_each``
statement: SQLite loops over the rows (and runs the passage version triggers, see vectors.py) without
coming back to Python.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import orjson

from letta_nb.errors import StaleCommitError
from letta_nb.store.files import FilePassages, FileUpdate
from letta_nb.store.ids import DT_FORMAT
from letta_nb.store.records import FileRecord
from letta_nb.store.sqlite import leases
from letta_nb.store.sqlite.checkpointer import Checkpointer, writer_connection
from letta_nb.store.sqlite.driver import write_transaction
from letta_nb.store.sqlite.step_writer import insert_rows

__all__ = ["FileWriter"]

R = TypeVar("R")

# One statement inserts every passage of a file: SQLite loops over the rows (and runs the vector-table
# triggers) without coming back to Python, so the writer thread never queues for the GIL between rows.
# Row-by-row executemany took ~180 us a row here while the loop embedded the next file (each row waits
# out the GIL's 5 ms switch interval now and then), ~55 us alone; this takes the SQLite work only.
_INSERT_FILE_PASSAGES = (
    "INSERT INTO passages (id, agent_id, text, embedding, embedding_model, tags, created_at, file_id) "
    "SELECT j.value ->> 0, :agent_id, j.value ->> 1, substr(:vectors, j.key * :nbytes + 1, :nbytes), "
    ":embedding_model, :tags, :created_at, :file_id FROM json_each(:rows) AS j ORDER BY j.key"
)


def _replace_files(conn: Any, updates: list[FileUpdate], fence: tuple[str, int] | None = None) -> None:
    with write_transaction(conn) as cursor:
        if fence is not None and not leases.holds(cursor, *fence):
            raise StaleCommitError(fence[0])  # the lease was lost: nothing of this batch is written
        for file, passages in updates:
            _replace_file(cursor, file, passages)


def _replace_file(cursor: Any, file: FileRecord, passages: FilePassages | None) -> None:
    old = [r[0] for r in cursor.execute("SELECT id FROM files WHERE agent_id = ? AND path = ?",
                                        (file.agent_id, file.path))]
    if old:
        marks = ", ".join("?" * len(old))
        cursor.execute(f"DELETE FROM passages WHERE agent_id = ? AND file_id IN ({marks})", (file.agent_id, *old))
        cursor.execute(f"DELETE FROM files WHERE id IN ({marks})", old)
    insert_rows(cursor, "files", [file])
    if passages is not None and passages.ids:
        vectors = np.ascontiguousarray(passages.vectors, dtype=np.float32)
        cursor.execute(_INSERT_FILE_PASSAGES, {
            "agent_id": passages.agent_id, "embedding_model": passages.embedding_model,
            "tags": json.dumps(passages.tags), "created_at": passages.created_at.strftime(DT_FORMAT),
            "file_id": file.id, "vectors": vectors.tobytes(), "nbytes": vectors.shape[1] * 4,
            # orjson: json.dumps(ensure_ascii=False) spent ~6 ms a MB of text on this thread's GIL. Text, not
            # bytes: SQLite reads a BLOB argument to json_each as JSONB.
            "rows": orjson.dumps(list(zip(passages.ids, passages.texts, strict=True))).decode(),
        })


class FileWriter:
    """The connection uploads write through: raw DB-API statements on a worker thread.

    Through SQLAlchemy's async engine a passage row cost ~240 us (statement compilation, a greenlet hop
    per call); as one raw statement a file (``_INSERT_FILE_PASSAGES``) it is the SQLite work itself, the
    passage triggers included (version counters only, see vectors.py). Running on a thread
    lets SQLite, which releases the GIL, write some files while the runtime loop embeds the next. One
    connection, one writer at a time (uploads commit in input order).
    """

    def __init__(self, path: str, checkpointer: Checkpointer, busy_timeout_ms: int = 10_000):
        self._path, self._busy_timeout_ms = path, busy_timeout_ms
        self.checkpointer = checkpointer  # WAL checkpoints happen there, not inside an upload's COMMIT
        self._conn: Any = None
        self._lock = threading.Lock()

    def replace_files(self, updates: list[FileUpdate], fence: tuple[str, int] | None = None) -> None:
        """Make each ``(file, passages)`` its file's whole record, in one transaction (blocks: call it
        from a worker thread); with ``fence`` ``(agent_id, token)``, only while that lease holds."""
        rows = sum(1 + (len(p.ids) if p is not None else 0) for _, p in updates)
        self.run(_replace_files, updates, fence, rows=rows)

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
