"""Uploaded files from the API: upload (chunk, embed, store), list, delete.

A file's passages and its record change in one transaction (store/files.py), so a file is all there or
absent. Each of those transactions is a change of the agent and commits under the agent's lease, fenced by
its token (:meth:`Runtime.agent_lease`), like every other change; but an upload runs for minutes and must
not hold the agent's turns back, so the lease is held only around each commit (one group of files, while
the next group is chunked and embedded outside it). A turn waits at most one group's commit; the upload
waits for a running turn before its next commit. A tool of a running turn uploading into its own agent
joins that turn's lease. Nothing a session caches depends on files, so nothing is invalidated.
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
from letta_nb.store.files import FileUpdate, delete_file, file_records, replace_files

if TYPE_CHECKING:
    from letta_nb.runtime.runtime import Runtime

__all__ = ["delete", "list_files", "upload"]


async def upload(rt: Runtime, agent: Any, path_or_paths: Any, *, chunk_size: int | None, chunk_overlap: int | None,
                 progress: bool, max_file_mb: float) -> IngestReport:
    """Upload files and directories to the agent's archival memory (see letta_nb/embeddings/ingest.py)."""
    state = await agent_state(rt, agent)
    settings = ChunkSettings(DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                             DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap)

    async def commit(updates: list[FileUpdate]) -> None:
        async with rt.agent_lease(state.id, join_turn=True) as lease:
            await replace_files(rt.store, updates, fence=(state.id, lease.token))

    async def remove(path: str) -> int | None:
        async with rt.agent_lease(state.id, join_turn=True) as lease:
            return await delete_file(rt.store, state.id, path, fence=lease.token)

    return await ingest(rt.store, rt.agent_embedder(state), state, path_or_paths,
                        settings=settings, progress=progress, max_file_mb=max_file_mb, commit=commit, remove=remove)


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
    async with rt.agent_lease(state.id, join_turn=True) as lease:
        removed = await delete_file(rt.store, state.id, wanted, fence=lease.token)
    if removed is None:
        raise UploadedFileNotFoundError(path, known, hint="See client.agents.files.list(agent).")
    return removed
