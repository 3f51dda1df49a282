"""WAL checkpoints on a background thread, so their fsyncs never stall the runtime loop.

SQLite checkpoints a WAL file from inside whichever COMMIT pushes it past ``wal_autocheckpoint``
pages; that commit then copies pages into the database file and fsyncs it, which took up to 19 ms
on the reference machine while a hundred agents waited on the runtime loop behind it (0.3 s of a
1.7 s concurrency run). The step writer's connections therefore switch automatic checkpoints off
and call :meth:`Checkpointer.wrote` after each commit; every ``every_rows`` rows this thread runs a
PASSIVE checkpoint on its own connection. PASSIVE never takes the write lock, so commits go on
while it copies, and it only copies frames no reader still needs: the WAL stays bounded without
anyone waiting. Other connections (the async engine, other processes) keep SQLite's default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from letta_nb.store.sqlite.driver import connect_raw

__all__ = ["Checkpointer", "writer_connection", "WRITER_CACHE_KB"]

# Writers' page cache: 16 MB instead of SQLite's default 2 MB. Chosen when a delete trigger made writers walk
# vec0's chunk blobs (95 us a row instead of 40 with the default cache); vec0 is now synced lazily by the
# vector store; the larger cache is kept (a few MB per writer), not re-measured without the trigger.
WRITER_CACHE_KB = 16_384


class Checkpointer:
    def __init__(self, connect: Callable[[], Any], *, every_rows: int = 2000):
        self._connect = connect
        self.every_rows = every_rows
        self._rows = 0
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        self.errors = 0

    def wrote(self, rows: int) -> None:
        """Count rows committed; past the threshold, ask the thread for a checkpoint (never blocks)."""
        self._rows += rows  # called from the loop and the upload thread: a lost count only delays a checkpoint
        if self._rows >= self.every_rows:
            self._rows = 0
            with self._start_lock:
                if self._thread is None and not self._closed:
                    self._thread = threading.Thread(target=self._run, name="letta_nb-checkpointer", daemon=True)
                    self._thread.start()
            self._wake.set()

    def close(self, timeout: float = 30) -> None:
        with self._start_lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except Exception:  # a checkpoint is an optimisation; the next one (or SQLite's own) catches up
                    self.errors += 1
        finally:
            conn.close()


def writer_connection(path: str, busy_timeout_ms: int) -> Any:
    """A connection for the store's bulk writers (step writer, uploads): automatic checkpoints off (a
    :class:`Checkpointer` runs them) and a larger page cache. No sqlite-vec: nothing a writer does touches
    a vec0 table (the vector store syncs them lazily, see vectors.py)."""
    conn = connect_raw(path, busy_timeout_ms=busy_timeout_ms)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KB}")
    return conn
