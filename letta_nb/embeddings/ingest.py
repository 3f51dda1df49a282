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
- **Per-file errors.** A file that is too large, binary, malformed or fails to embed becomes an
  ``error`` row of the report; the batch goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import hashlib
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from letta_nb.embeddings.chunking import KNOWN_SUFFIXES, ChunkedFile, ChunkSettings, chunk_files, failure_message
from letta_nb.embeddings.ingest_report import FileResult, IngestReport
from letta_nb.errors import InvalidArgumentError
from letta_nb.store.files import FilePassages, FileUpdate, file_records, replace_files
from letta_nb.store.store import new_id, utcnow

__all__ = ["ingest", "discover", "chunk_pool", "file_groups", "DEFAULT_MAX_FILE_MB"]

DEFAULT_MAX_FILE_MB = 25.0
EMBED_BATCH = 256
PROCESS_POOL_MIN_BYTES = 2_000_000  # below this, starting worker processes costs more than it saves
GROUP_BYTES, GROUP_FILES = 128_000, 32  # one chunking task: ~15 ms of a worker's time
_SKIP_DIRS = {"__pycache__", "node_modules", ".git", ".hg", ".svn", ".ipynb_checkpoints"}


def discover(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(absolute path, error or None) for each file to upload: named files as given, directories
    walked (sorted, hidden entries skipped) for files of a known type."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[tuple[str, str | None]] = []
    real_dirs: dict[str, str] = {}
    for raw in paths:
        if not isinstance(raw, (str, os.PathLike)):
            raise InvalidArgumentError(f"paths must be file or directory paths, got {raw!r}")
        path = _resolve(raw, real_dirs)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
                out += [(os.path.join(root, n), None) for n in sorted(names)
                        if not n.startswith(".") and Path(n).suffix.lower() in KNOWN_SUFFIXES]
        elif path.is_file():
            out.append((str(path), None))
        else:
            out.append((str(path), "no such file or directory"))
    seen: set[str] = set()
    return [(p, e) for p, e in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def _resolve(raw: str | os.PathLike, real_dirs: dict[str, str]) -> Path:
    """``Path(raw).expanduser().resolve()``, each directory resolved once per upload: a list of many files
    (what a notebook passes after a glob) otherwise pays a symlink walk of every parent for each file."""
    path = os.path.abspath(os.path.expanduser(os.fspath(raw)))
    if os.path.islink(path):
        return Path(os.path.realpath(path))
    head, name = os.path.split(path)
    if head not in real_dirs:
        real_dirs[head] = os.path.realpath(head)
    return Path(real_dirs[head], name)


def chunk_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes for chunking. forkserver/spawn, never fork: the kernel process has threads.
    One fewer than the cores (the embedder and the store run in this process), 1 to 4."""
    forced = os.environ.get("LETTA_NB_CHUNK_WORKERS", "").strip()
    if workers is None and forced.isdigit() and int(forced) > 0:
        workers = int(forced)
    workers = workers or max(1, min(4, (os.cpu_count() or 2) - 1))
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


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


def _processes_are_safe() -> bool:
    """Worker processes (forkserver/spawn) re-import ``__main__``: harmless in a notebook, a REPL or
    ``python -c``/``-m``, but a plain script without an ``if __name__ == "__main__"`` guard would run
    again in each worker. So scripts chunk in a thread unless LETTA_NB_CHUNK_WORKERS asks for processes."""
    forced = os.environ.get("LETTA_NB_CHUNK_WORKERS", "").strip()
    if forced:
        return forced != "0"
    main = sys.modules.get("__main__")
    interactive = getattr(main, "__file__", None) is None or getattr(main, "__spec__", None) is not None
    return interactive and (os.cpu_count() or 1) > 1


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress(enabled: bool, total: int) -> Any:
    from tqdm.auto import tqdm  # a widget in notebooks, text on stderr elsewhere

    return tqdm(total=total, unit="B", unit_scale=True, desc="upload", file=sys.stderr, disable=not enabled,
                leave=True, dynamic_ncols=True)


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
) -> IngestReport:
    """Upload files to ``agent``'s archival memory (see the module docstring). ``pool``: an executor to
    chunk in (the benchmark passes a warm one); by default processes for large uploads, else a thread."""
    if not isinstance(max_file_mb, (int, float)) or max_file_mb <= 0:
        raise InvalidArgumentError(f"max_file_mb must be a positive number, got {max_file_mb!r}")
    max_bytes = int(max_file_mb * 1e6)
    started = time.perf_counter()
    found = discover(paths)
    report = IngestReport(agent.id)
    chunking = f"size={settings.chunk_size} overlap={settings.chunk_overlap} embedding={agent.embedding}"
    known = await file_records(store, agent.id, [p for p, e in found if e is None])
    sizes = {p: os.path.getsize(p) for p, e in found if e is None}

    # What needs chunking: new files, and known files whose size, settings or hash changed.
    results: dict[str, FileResult] = {}
    todo: list[str] = []
    for path, error in found:
        row = known.get(path)
        if error is not None:
            results[path] = FileResult(path, "error", error=error)
        elif row is not None and row.chunking == chunking and row.size_bytes == sizes[path] \
                and row.content_hash == await asyncio.to_thread(_sha256, path):
            results[path] = FileResult(path, "unchanged", row.chunks, sizes[path])
        else:
            todo.append(path)

    own_pool = None
    if pool is None and sum(sizes[p] for p in todo) >= PROCESS_POOL_MIN_BYTES and _processes_are_safe():
        pool = own_pool = chunk_pool()
    report.workers = "thread" if pool is None else f"{getattr(pool, '_max_workers', '?')} worker(s)"
    loop = asyncio.get_running_loop()
    groups = file_groups(todo, sizes)
    ahead = 4 * getattr(pool, "_max_workers", 1) + 4 if pool is not None else 2  # ~1 MB of files queued
    bar = _progress(progress, sum(sizes[p] for p in todo))
    pending: dict[int, asyncio.Future] = {}
    previous_write: asyncio.Task | None = None
    total_chunks = 0
    unwritten: list[FileUpdate] = []
    try:
        queue = iter(range(len(groups)))

        def submit(group: list[str]) -> asyncio.Future:
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
            for path, chunked, matrix in zip(group, outcomes, await _embed_files(embedder, outcomes)):
                if not isinstance(matrix, str):
                    try:
                        passages, file_row = await _rows(store, agent, chunked, matrix, chunking, known.get(path))
                    except Exception as e:  # noqa: BLE001 - any one file's failure is reported, not raised
                        matrix = failure_message(e)
                if isinstance(matrix, str):
                    results[path] = FileResult(path, "error", bytes=sizes[path], error=matrix)
                    bar.update(sizes[path])
                    continue
                # Commits stay in input order; files embedded while a commit runs share the next one.
                unwritten.append((file_row, passages))
                if previous_write is None or previous_write.done():
                    if previous_write is not None:
                        await previous_write  # its error, if any, stops the upload here
                    previous_write, unwritten = asyncio.ensure_future(replace_files(store, unwritten)), []
                status = "replaced" if path in known else "added"
                results[path] = FileResult(path, status, file_row["chunks"], chunked.size, splitter=chunked.splitter)
                total_chunks += file_row["chunks"]
                bar.update(sizes[path])
                bar.set_postfix(files=f"{len(results)}/{len(found)}", chunks=total_chunks, refresh=False)
        if previous_write is not None:
            await previous_write
        if unwritten:
            await replace_files(store, unwritten)
    finally:
        for fut in pending.values():
            fut.cancel()
        if previous_write is not None and not previous_write.done():
            # Cancelled mid-upload: let the write in flight finish (it is one transaction either way).
            await asyncio.shield(previous_write)
        bar.close()
        if own_pool is not None:
            own_pool.shutdown(wait=False, cancel_futures=True)
    report.files = [results[p] for p, _ in found]
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
        return await embed(file.chunks)
    except Exception as e:  # noqa: BLE001 - reported per file
        return failure_message(e)


async def _rows(store: Any, agent: Any, chunked: ChunkedFile, matrix: np.ndarray, chunking: str,
                old: Any) -> tuple[FilePassages | None, dict[str, Any]]:
    """A file's passages and its ``files`` row, ready for :func:`replace_files`."""
    now = utcnow()
    file_id = new_id("file")
    passages = None
    if len(matrix):
        await store.vectors.prepare(int(matrix.shape[1]))
        passages = FilePassages(ids=[new_id("passage") for _ in chunked.chunks], texts=list(chunked.chunks),
                                vectors=matrix, agent_id=agent.id, embedding_model=agent.embedding,
                                tags=[f"file:{Path(chunked.path).name}"], created_at=now)
    file_row = {
        "id": file_id, "agent_id": agent.id, "path": chunked.path, "content_hash": chunked.sha256,
        "size_bytes": chunked.size, "chunks": len(passages.ids) if passages else 0, "chunking": chunking,
        "created_at": old.created_at if old is not None else now, "updated_at": now,
    }
    return passages, file_row
