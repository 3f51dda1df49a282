"""File ingestion: chunk -> embed -> store, pipelined, idempotent, resumable.

The pipeline has three stages that overlap: chunking (CPU, in worker processes for large uploads so it
really runs beside the event loop, in a thread for small ones) runs about a megabyte of files ahead, in
groups of consecutive files (one worker task each, ~128 KB); the runtime loop embeds the group in front of
it in one embedder call; the store commits the previous files meanwhile, on its writer thread. Files come
out in input order.

Invariants:
- **Idempotent.** A file's record holds its content hash and chunking settings (``files`` table); an
  upload of the same bytes with the same settings and embedder is ``unchanged`` and writes nothing, a
  changed one is ``replaced`` (old passages out, new in).
- **Resumable.** A file's row and passages commit in one transaction (store/files.py; files embedded
  while the previous commit ran share the next one), so after a crash, even
  SIGKILL, re-running the upload skips the files that committed and redoes the rest; no file is half
  stored or duplicated.
- **Per-file errors.** A file that is too large, binary, malformed, unreadable (sources.py: dangling
  symlinks, loops, FIFOs and devices, files gone since the listing) or fails to embed becomes an
  ``error`` row of the report; the batch goes on. A file with no text is ``skipped`` and has no record
  (one it replaces loses its passages), so it is not an empty file in ``files.list``.
- **NUL characters** in a text file are stored as U+FFFD on both backends, and its row's ``note`` counts
  them (chunking.py); a binary file is an ``error`` row.
- **Workers die with the upload.** Chunking processes exit when the process that started them does,
  SIGKILL included (chunk_workers.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from letta_nb.embeddings.chunk_workers import chunk_pool, processes_are_safe
from letta_nb.embeddings.chunking import (
    ChunkedFile,
    ChunkSettings,
    chunk_files,
    empty_note,
    failure_message,
    nul_note,
)
from letta_nb.embeddings.ingest_report import FileResult, IngestReport
from letta_nb.embeddings.sources import Found, discover, explain_os_error, open_regular
from letta_nb.errors import InvalidArgumentError, LettaNBError
from letta_nb.store.files import FilePassages, FileUpdate, delete_file, file_records, replace_files
from letta_nb.store.ids import new_id, utcnow
from letta_nb.store.records import FileRecord

__all__ = ["ingest", "discover", "chunk_pool", "file_groups", "DEFAULT_MAX_FILE_MB"]

DEFAULT_MAX_FILE_MB = 25.0
EMBED_BATCH = 256
PROCESS_POOL_MIN_BYTES = 2_000_000  # below this, starting worker processes costs more than it saves
GROUP_BYTES, GROUP_FILES = 128_000, 32  # one chunking task: ~15 ms of a worker's time


def file_groups(paths: list[str], sizes: dict[str, int]) -> list[list[str]]:
    """Consecutive files, about ``GROUP_BYTES`` a group (a large file alone): one chunking task each, so a
    worker has a queue of real work and does not wait on a busy uploader for every small file."""
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for path in paths:
        if current and (used + sizes[path] > GROUP_BYTES or len(current) >= GROUP_FILES):
            groups.append(current)
            current, used = [], 0
        current.append(path)
        used += sizes[path]
    if current:
        groups.append(current)
    return groups


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    f, _ = open_regular(path)
    with f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress(enabled: bool, total: int) -> Any:
    from tqdm.auto import tqdm  # a widget in notebooks, text on stderr elsewhere

    return tqdm(total=total, unit="B", unit_scale=True, desc="upload", file=sys.stderr, disable=not enabled,
                leave=True, dynamic_ncols=True)


def _check_options(max_file_mb: Any, progress: Any) -> int:
    """The largest file in bytes; InvalidArgumentError for an option that is not what it should be."""
    if isinstance(max_file_mb, bool) or not isinstance(max_file_mb, (int, float)) \
            or not math.isfinite(max_file_mb) or max_file_mb <= 0:
        raise InvalidArgumentError(f"max_file_mb must be a positive, finite number of megabytes, got {max_file_mb!r}; "
                                   f"e.g. max_file_mb=100 (the default is {DEFAULT_MAX_FILE_MB:g})")
    if not isinstance(progress, bool):
        raise InvalidArgumentError(f"progress must be True or False, got {progress!r}")
    return int(max_file_mb * 1e6)


async def _plan(store: Any, agent: Any, found: list[Found], chunking: str
                ) -> tuple[dict[str, FileResult], list[str], dict[str, int], dict[str, FileRecord]]:
    """(rows already decided, files to chunk, their sizes, the agent's records of them): entries that
    cannot be read or are skipped, and known files whose size, settings and hash are unchanged, are
    decided here; everything else is chunked."""
    results: dict[str, FileResult] = {}
    sizes: dict[str, int] = {}
    for f in found:
        if f.error is not None:
            results[f.path] = FileResult(f.path, "error", error=f.error)
        elif f.skipped is not None:
            results[f.path] = FileResult(f.path, "skipped", note=f.skipped)
        else:
            try:
                sizes[f.path] = os.stat(f.path).st_size
            except OSError as e:  # gone (or changed) since it was listed
                results[f.path] = FileResult(f.path, "error",
                                             error=f"cannot read {f.path}: {explain_os_error(f.path, e)}")
    known = await file_records(store, agent.id, list(sizes))
    todo: list[str] = []
    for path, size in sizes.items():
        row = known.get(path)
        if row is not None and row.chunking == chunking and row.size_bytes == size:
            try:
                same = row.content_hash == await asyncio.to_thread(_sha256, path)
            except (LettaNBError, OSError) as e:  # unreadable now: say so, keep what was stored
                results[path] = FileResult(path, "error", bytes=size, error=failure_message(e))
                continue
            if same:
                results[path] = FileResult(path, "unchanged", row.chunks, size)
                continue
        todo.append(path)
    return results, todo, sizes, known


async def ingest(
    store: Any,
    embedder: Any,
    agent: Any,
    paths: Any,
    *,
    settings: ChunkSettings = ChunkSettings(),
    progress: bool = True,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    pool: concurrent.futures.Executor | None = None,
    commit: Callable[[list[FileUpdate]], Awaitable[None]] | None = None,
    remove: Callable[[str], Awaitable[int | None]] | None = None,
) -> IngestReport:
    """Upload files to ``agent``'s archival memory (see the module docstring). ``pool``: an executor to
    chunk in (the benchmark passes a warm one); by default processes for large uploads, else a thread.
    ``commit`` and ``remove`` write a group of files and delete one file's passages (by default straight to
    the store; the runtime's take the agent's lease around each, see runtime/services/files.py)."""
    max_bytes = _check_options(max_file_mb, progress)
    commit = commit or functools.partial(replace_files, store)
    remove = remove or functools.partial(delete_file, store, agent.id)
    started = time.perf_counter()
    found = discover(paths)
    report = IngestReport(agent.id)
    chunking = f"size={settings.chunk_size} overlap={settings.chunk_overlap} embedding={agent.embedding}"
    results, todo, sizes, known = await _plan(store, agent, found, chunking)

    own_pool = None
    if pool is None and sum(sizes[p] for p in todo) >= PROCESS_POOL_MIN_BYTES and processes_are_safe():
        pool = own_pool = chunk_pool()
    report.workers = "thread" if pool is None else f"{getattr(pool, '_max_workers', '?')} worker(s)"
    loop = asyncio.get_running_loop()
    groups = file_groups(todo, sizes)
    ahead = 4 * getattr(pool, "_max_workers", 1) + 4 if pool is not None else 2  # ~1 MB of files queued
    bar = _progress(progress, sum(sizes[p] for p in todo))
    pending: dict[int, asyncio.Future[list[ChunkedFile | str]]] = {}
    previous_write: asyncio.Future[None] | None = None
    total_chunks = 0
    unwritten: list[FileUpdate] = []
    emptied: list[str] = []  # known files that now have no text: their old passages go
    try:
        queue = iter(range(len(groups)))

        def submit(group: list[str]) -> asyncio.Future[list[ChunkedFile | str]]:
            nonlocal pool
            try:
                return loop.run_in_executor(pool, chunk_files, group, settings, max_bytes)
            except BrokenProcessPool:  # a worker died (killed, out of memory): go on in a thread
                pool = None
                return loop.run_in_executor(None, chunk_files, group, settings, max_bytes)

        def fill() -> None:
            while len(pending) < ahead and (k := next(queue, None)) is not None:
                pending[k] = submit(groups[k])

        fill()
        for k, group in enumerate(groups):
            fut = pending.pop(k)
            fill()  # keep the workers busy while this group is embedded and stored
            try:
                outcomes: list[ChunkedFile | str] = await fut
            except BrokenProcessPool:
                outcomes = await submit(group)
            embedded = await _embed_files(embedder, outcomes)
            for path, chunked, matrix in zip(group, outcomes, embedded, strict=True):
                bar.update(sizes[path])
                if isinstance(chunked, ChunkedFile) and not chunked.chunks:
                    results[path] = FileResult(path, "skipped", 0, chunked.size, splitter=chunked.splitter,
                                               note=empty_note(chunked))
                    if path in known:
                        emptied.append(path)
                    continue
                # A file that failed to chunk (a str) has that error as its matrix too.
                if isinstance(chunked, ChunkedFile) and not isinstance(matrix, str):
                    try:
                        passages, file = await _records(store, agent, chunked, matrix, chunking, known.get(path))
                    except Exception as e:  # noqa: BLE001 - any one file's failure is reported, not raised
                        matrix = failure_message(e)
                if isinstance(matrix, str):
                    results[path] = FileResult(path, "error", bytes=sizes[path], error=matrix)
                    continue
                assert isinstance(chunked, ChunkedFile)  # (see above)
                # Commits stay in input order; files embedded while a commit runs share the next one.
                unwritten.append((file, passages))
                if previous_write is None or previous_write.done():
                    if previous_write is not None:
                        await previous_write  # its error, if any, stops the upload here
                    previous_write, unwritten = asyncio.ensure_future(commit(unwritten)), []
                status = "replaced" if path in known else "added"
                results[path] = FileResult(path, status, file.chunks, chunked.size, splitter=chunked.splitter,
                                           note=nul_note(chunked))
                total_chunks += file.chunks
                bar.set_postfix(files=f"{len(results)}/{len(found)}", chunks=total_chunks, refresh=False)
        if previous_write is not None:
            await previous_write
        if unwritten:
            await commit(unwritten)
        for path in emptied:
            removed = await remove(path)
            old = results[path]
            results[path] = FileResult(path, old.status, 0, old.bytes, splitter=old.splitter,
                                       note=f"{old.note}; its {removed or 0} earlier passage(s) were removed")
    finally:
        for fut in pending.values():
            fut.cancel()
        if previous_write is not None and not previous_write.done():
            # Cancelled mid-upload: let the write in flight finish (it is one transaction either way).
            await asyncio.shield(previous_write)
        bar.close()
        if own_pool is not None:
            own_pool.shutdown(wait=False, cancel_futures=True)
    report.files = [results[f.path] for f in found]
    report.seconds = time.perf_counter() - started
    return report


async def _embed_files(embedder: Any, outcomes: list[ChunkedFile | str]) -> list[np.ndarray | str]:
    """Each chunked file's vectors, or why it has none (a chunking failure passes through). One embedding
    call for a group's chunks (``EMBED_BATCH`` at a time): most files are a few chunks, and a call per file
    paid the embedder's fixed cost ~800 times an upload. If the group fails, file by file, so a failure
    is its own file's."""
    async def embed(texts: list[str]) -> np.ndarray:
        parts = [np.asarray(await embedder.embed(texts[i : i + EMBED_BATCH]), dtype=np.float32)
                 for i in range(0, len(texts), EMBED_BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    files = [f for f in outcomes if not isinstance(f, str)]
    try:
        matrix = await embed([c for f in files for c in f.chunks])
    except Exception as e:  # noqa: BLE001 - reported per file
        if len(files) == 1:
            return [f if isinstance(f, str) else failure_message(e) for f in outcomes]
        return [f if isinstance(f, str) else await _embed_one(embed, f) for f in outcomes]
    ends = iter(np.cumsum([len(f.chunks) for f in files]).tolist())
    return [f if isinstance(f, str) else matrix[(end := next(ends)) - len(f.chunks) : end] for f in outcomes]


async def _embed_one(embed: Any, file: ChunkedFile) -> np.ndarray | str:
    try:
        matrix: np.ndarray = await embed(file.chunks)
        return matrix
    except Exception as e:  # noqa: BLE001 - reported per file
        return failure_message(e)


async def _records(store: Any, agent: Any, chunked: ChunkedFile, matrix: np.ndarray, chunking: str,
                   old: FileRecord | None) -> tuple[FilePassages | None, FileRecord]:
    """A file's passages and its record, ready for :func:`replace_files`."""
    now = utcnow()
    file_id = new_id("file")
    passages = None
    if len(matrix):
        await store.vectors.prepare(int(matrix.shape[1]))
        passages = FilePassages(ids=[new_id("passage") for _ in chunked.chunks], texts=list(chunked.chunks),
                                vectors=matrix, agent_id=agent.id, embedding_model=agent.embedding,
                                tags=[f"file:{Path(chunked.path).name}"], created_at=now)
    file = FileRecord(id=file_id, agent_id=agent.id, path=chunked.path, content_hash=chunked.sha256,
                      size_bytes=chunked.size, chunks=len(passages.ids) if passages else 0, chunking=chunking,
                      created_at=old.created_at if old is not None else now, updated_at=now)
    return passages, file
