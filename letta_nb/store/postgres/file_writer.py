"""The PostgreSQL file writer: an upload's files and passages in one transaction, passages by COPY.

:func:`letta_nb.store.files.replace_files` calls :meth:`PgFileWriter.replace_files` from a worker thread
(the FileWrites protocol is blocking); the work runs as a coroutine on the runtime's loop, where the asyncpg
pool lives, and the thread waits for it. One transaction replaces every file of the batch (old passages and
row out, new row and passages in), so a file is all there or absent after a crash; once started it finishes
even if the upload is cancelled. Passages go in with COPY (``copy_records_to_table``): one round trip a
file, the row triggers (postgres/schema.py) included.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from letta_nb.errors import StaleCommitError
from letta_nb.store.files import FilePassages, FileUpdate
from letta_nb.store.postgres.group_commit import insert_rows
from letta_nb.store.records import FileRecord

__all__ = ["PgFileWriter"]

_HELD = "SELECT 1 FROM agent_leases WHERE agent_id = $1 AND token = $2 AND holder IS NOT NULL FOR SHARE"
_PASSAGE_COLUMNS = ["id", "agent_id", "text", "embedding", "embedding_model", "tags", "created_at", "file_id"]


async def _replace_file(conn: Any, file: FileRecord, passages: FilePassages | None) -> None:
    old = [r[0] for r in await conn.fetch("SELECT id FROM files WHERE agent_id = $1 AND path = $2",
                                          file.agent_id, file.path)]
    if old:
        await conn.execute("DELETE FROM passages WHERE agent_id = $1 AND file_id = ANY($2::varchar[])",
                           file.agent_id, old)
        await conn.execute("DELETE FROM files WHERE id = ANY($1::varchar[])", old)
    await insert_rows(conn, "files", [file])
    if passages is not None and passages.ids:
        vectors = np.ascontiguousarray(passages.vectors, dtype=np.float32)
        tags = list(passages.tags)
        records = [(pid, passages.agent_id, text, vectors[i].tobytes(), passages.embedding_model, tags,
                    passages.created_at, file.id)
                   for i, (pid, text) in enumerate(zip(passages.ids, passages.texts, strict=True))]
        await conn.copy_records_to_table("passages", records=records, columns=_PASSAGE_COLUMNS)


class PgFileWriter:
    """Uploads' writes on the runtime loop's pool; :meth:`replace_files` blocks its (worker) thread."""

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop):
        self._pool = pool
        self._loop = loop

    def replace_files(self, updates: list[FileUpdate], fence: tuple[str, int] | None = None) -> None:
        """Make each ``(file, passages)`` its file's whole record, in one transaction; with ``fence``
        ``(agent_id, lease token)`` only while that lease holds (StaleCommitError otherwise, nothing written).
        Blocks: call it from a worker thread, never from the loop."""
        asyncio.run_coroutine_threadsafe(self._replace(updates, fence), self._loop).result()

    async def _replace(self, updates: list[FileUpdate], fence: tuple[str, int] | None) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Share-locked: nobody can take the lease before this transaction ends (postgres/leases.py).
            if fence is not None and await conn.fetchval(_HELD, *fence) is None:
                raise StaleCommitError(fence[0])
            for file, passages in updates:
                await _replace_file(conn, file, passages)

    def close(self) -> None:
        """Nothing of its own to release: the pool belongs to the backend (postgres/backend.py)."""
