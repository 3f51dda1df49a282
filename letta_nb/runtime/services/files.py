"""Uploaded files from the API: upload (chunk, embed, store), list, delete.

A file's passages and its record change in one transaction (store/files.py), so a file is all there or
absent. Like single passages (see :mod:`.passages`), uploads do not take the agent's lease: no session
depends on them and the vector copy follows the rows by its own sequence; an upload runs for minutes and
must not hold the agent's turns back.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from letta_nb.embeddings.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, ChunkSettings
from letta_nb.embeddings.ingest import ingest
from letta_nb.embeddings.ingest_report import IngestReport, UploadedFile
from letta_nb.errors import UploadedFileNotFoundError
from letta_nb.runtime.services.lookup import agent_state
from letta_nb.store.files import delete_file, file_records

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["delete", "list_files", "upload"]


async def upload(rt: Runtime, agent: Any, path_or_paths: Any, *, chunk_size: int | None, chunk_overlap: int | None,
                 progress: bool, max_file_mb: float) -> IngestReport:
    """Upload files and directories to the agent's archival memory (see letta_nb/embeddings/ingest.py)."""
    state = await agent_state(rt, agent)
    settings = ChunkSettings(DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                             DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap)
    return await ingest(rt.store, rt.agent_embedder(state), state, path_or_paths,
                        settings=settings, progress=progress, max_file_mb=max_file_mb)


async def list_files(rt: Runtime, agent: Any) -> list[UploadedFile]:
    state = await agent_state(rt, agent)
    return [UploadedFile(r.path, r.content_hash, r.size_bytes, r.chunks, r.chunking,
                         r.updated_at.replace(tzinfo=r.updated_at.tzinfo or dt.timezone.utc))
            for r in (await file_records(rt.store, state.id)).values()]


async def delete(rt: Runtime, agent: Any, path: str) -> int:
    """Remove a file's passages and record (by the path as listed, or as given); how many passages went."""
    state = await agent_state(rt, agent)
    known = list(await file_records(rt.store, state.id))
    wanted = path if path in known else str(Path(path).expanduser().resolve())
    removed = await delete_file(rt.store, state.id, wanted)
    if removed is None:
        raise UploadedFileNotFoundError(path, known, hint="See client.agents.files.list(agent).")
    return removed
