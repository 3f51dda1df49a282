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
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from letta_nb.errors import StaleCommitError
from letta_nb.store.engine import WRITE
from letta_nb.store.migrations import METADATA
from letta_nb.store.records import FileRecord, from_row
from letta_nb.store.sqlite.leases import HELD

__all__ = ["file_records", "replace_files", "delete_file", "FilePassages", "FileUpdate"]

T = METADATA.tables


async def file_records(store: Any, agent_id: str, paths: list[str] | None = None) -> dict[str, FileRecord]:
    """path -> record of the agent's uploaded files (only ``paths`` when given)."""
    f = T["files"]
    q = sa.select(f).where(f.c.agent_id == agent_id).order_by(f.c.path)
    if paths is not None:
        if not paths:
            return {}
        q = q.where(f.c.path.in_(paths))
    async with store.engine.connect() as conn:
        return {r.path: from_row(FileRecord, r) for r in await conn.execute(q)}


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


FileUpdate = tuple[FileRecord, "FilePassages | None"]  # (the file's record, its passages)


async def replace_files(store: Any, updates: list[FileUpdate], fence: tuple[str, int] | None = None) -> None:
    """Make each ``(file, passages)`` its file's whole record (keyed by agent and path), all in one
    transaction: a file is all there or absent, whatever happens. With ``fence`` ``(agent_id, lease token)``
    the transaction is refused whole (StaleCommitError) if that lease no longer holds (runtime/leases.py).

    Runs on a worker thread with the backend's file writer (store/sqlite/file_writer.py); once started it
    finishes even if the upload is cancelled. Uploads hand over every file embedded while the previous
    transaction ran: small files share a commit (each commit rewrites the index and vector-table pages
    it touched, ~60 pages a file when each had its own)."""
    await asyncio.to_thread(store.file_writer.replace_files, updates, fence)


async def delete_file(store: Any, agent_id: str, path: str, fence: int | None = None) -> int | None:
    """Delete the file's passages and record; the number of passages removed, None if there was no such file.
    With ``fence`` (a lease token on the agent), refused (StaleCommitError) if that lease no longer holds."""
    f, p = T["files"], T["passages"]
    async with store.engine.execution_options(**WRITE).begin() as conn:
        if fence is not None and (await conn.execute(sa.text(HELD), {"agent_id": agent_id, "token": fence})).first() \
                is None:
            raise StaleCommitError(agent_id)
        ids = (await conn.execute(sa.select(f.c.id).where(f.c.agent_id == agent_id, f.c.path == path))).scalars().all()
        if not ids:
            return None
        removed = await conn.execute(p.delete().where(p.c.agent_id == agent_id, p.c.file_id.in_(ids)))
        await conn.execute(f.delete().where(f.c.id.in_(ids)))
        count: int = removed.rowcount
        return count
