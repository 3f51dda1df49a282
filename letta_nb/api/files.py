"""Files uploaded to an agent's archival memory (``client.agents.files``).

A resource of the public API (:mod:`letta_nb.client` says how the sync and async twins are made).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from letta_nb._client_args import (
    agent_ref,
    text_arg,
)
from letta_nb._twins import async_twin, sync_twin
from letta_nb.api._base import AgentRef, StrPath, _Resource
from letta_nb.embeddings.ingest import DEFAULT_MAX_FILE_MB
from letta_nb.embeddings.ingest_report import IngestReport, UploadedFile
from letta_nb.runtime.services import files as _files

if TYPE_CHECKING:
    pass

__all__ = ['Files']


class Files(_Resource):
    """Files uploaded to an agent's archival memory: chunked by type, embedded, stored; re-uploads are idempotent."""

    async def _upload(self, agent: AgentRef, path_or_paths: StrPath | Iterable[StrPath], *,
                      chunk_size: int | None = None, chunk_overlap: int | None = None, progress: bool = True,
                      max_file_mb: float = DEFAULT_MAX_FILE_MB) -> IngestReport:
        """Upload files and directories (walked for known file types; symlinked directories inside are not
        followed). Unchanged files are ``unchanged``, changed ones replaced; a file that cannot be read or
        fails is an ``error`` row and the rest go on; a file with no text is a ``skipped`` row."""
        return await _files.upload(self._rt, agent_ref(agent), path_or_paths, chunk_size=chunk_size,
                                   chunk_overlap=chunk_overlap, progress=progress, max_file_mb=max_file_mb)

    async def _list(self, agent: AgentRef) -> list[UploadedFile]:
        """The files uploaded to the agent: path, content hash, size, chunks, chunking, when."""
        return await _files.list_files(self._rt, agent_ref(agent))

    async def _delete(self, agent: AgentRef, path: str) -> int:
        """Remove a file's passages and record; returns how many passages were removed."""
        path = text_arg(path, "path")
        return await _files.delete(self._rt, agent_ref(agent), path)

    upload, aupload = sync_twin(_upload), async_twin(_upload)
    list, alist = sync_twin(_list), async_twin(_list)
    delete, adelete = sync_twin(_delete), async_twin(_delete)
