"""``bench ingest``: upload throughput end to end against chunking alone.

Workload: the Python standard library's own source tree (real code and text present on every machine;
files of the types we chunk, site-packages and caches excluded), up to a byte budget, uploaded to one
agent: chunked per file type, embedded with ``hash``, stored in a real store file. Baseline in the same
run: the same chunking of the same files through the same warm worker pool, and nothing else. The
ratio shows how much of embedding and storing the pipeline hides behind chunking (1.0 = all of it).
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from letta_nb.bench._backend import BenchBackend
from letta_nb.bench._report import BenchResult

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from letta_nb.embeddings.chunking import ChunkSettings

__all__ = ["run", "stdlib_files"]


def stdlib_files(budget_bytes: int) -> list[str]:
    from letta_nb.embeddings.chunking import KNOWN_SUFFIXES

    root = Path(sysconfig.get_paths()["stdlib"])
    picked, total = [], 0
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__", "dist-packages")
                         and not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if Path(name).suffix.lower() not in KNOWN_SUFFIXES or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            if size > 1_000_000:
                continue
            picked.append(path)
            total += size
            if total >= budget_bytes:
                return picked
    return picked


def _workers_cpu(pool: ProcessPoolExecutor) -> float:
    """CPU seconds the pool's worker processes have used so far (nan where /proc is not there)."""
    from letta_nb.testing.process import process_cpu_seconds

    readings = [process_cpu_seconds(p.pid) for p in pool._processes.values() if p.pid is not None]  # all started
    seconds = [r for r in readings if r is not None]
    return sum(seconds) if len(seconds) == len(readings) else math.nan


class _ChunkRun(NamedTuple):
    seconds: float
    chunks: int
    workers_cpu_s: float


class _UploadRun(NamedTuple):
    report: Any  # IngestReport
    stored: int  # passages in the store afterwards
    workers_cpu_s: float
    own_cpu_s: float  # this process: embedding, storing and the pipeline's own work


def _chunk_alone(pool: ProcessPoolExecutor, files: list[str], settings: ChunkSettings) -> _ChunkRun:
    """The upload's chunking tasks (the same groups of files), all queued at once, and nothing else."""
    from letta_nb.embeddings.chunking import chunk_files
    from letta_nb.embeddings.ingest import file_groups

    cpu, t = _workers_cpu(pool), time.perf_counter()
    groups = file_groups(files, {f: os.path.getsize(f) for f in files})
    futures = [pool.submit(chunk_files, group, settings, None) for group in groups]
    chunks = sum(len(c.chunks) for fut in futures for c in fut.result() if not isinstance(c, str))
    return _ChunkRun(time.perf_counter() - t, chunks, _workers_cpu(pool) - cpu)


def _upload(files: list[str], settings: ChunkSettings, pool: ProcessPoolExecutor, backend: BenchBackend) -> _UploadRun:
    """One upload of ``files`` to a new agent in a new store, as the first upload of a kernel: the hash
    embedder's vocabulary starts empty."""
    from letta_nb.embeddings import hash as hash_embedder
    from letta_nb.embeddings.ingest import ingest

    hash_embedder._FEATURES.clear()
    with (
        tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp,
        backend.connect(backend.store(tmp, "ingest")) as client,
    ):
        agent = client.agents.create("bench-ingest", embedding="hash")
        rt = client.runtime
        workers, own = _workers_cpu(pool), time.process_time()
        report = client._thread.run(
            ingest(rt.store, rt.embedder("hash"), agent, files, settings=settings, pool=pool, progress=False)
        )
        workers, own = _workers_cpu(pool) - workers, time.process_time() - own
        return _UploadRun(report, len(client.agents.passages.list(agent)), workers, own)


def run(quick: bool = False, backend: BenchBackend | None = None) -> BenchResult:
    if backend is None:
        with BenchBackend() as sqlite:
            return run(quick, sqlite)
    from letta_nb.embeddings.chunking import ChunkSettings, chunk_files
    from letta_nb.embeddings.ingest import chunk_pool

    files = stdlib_files(2_000_000 if quick else 12_000_000)
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    settings = ChunkSettings()
    # A shared 2-core machine drifts by 20-50% within minutes: pair the two runs in each round, alternate
    # which goes first (so a steady drift favours neither), and take the median of the rounds' ratios.
    rounds = 1 if quick else 7
    pool = chunk_pool()
    workers: int = pool._max_workers  # type: ignore[attr-defined]  # typeshed leaves it out; CPython has it
    chunk_runs: list[_ChunkRun] = []
    uploads: list[_UploadRun] = []
    try:
        # Warm the workers (llama-index and the grammars imported, splitters built) for both runs.
        list(pool.map(chunk_files, [files[:4]] * workers, [settings] * workers))
        for k in range(rounds):
            if k % 2:
                uploads.append(_upload(files, settings, pool, backend))
            chunk_runs.append(_chunk_alone(pool, files, settings))
            if not k % 2:
                uploads.append(_upload(files, settings, pool, backend))
    finally:
        pool.shutdown()
    chunk_s = statistics.median(run.seconds for run in chunk_runs)
    chunk_count = chunk_runs[-1].chunks
    seconds = statistics.median(up.report.seconds for up in uploads)
    report, stored = uploads[-1].report, uploads[-1].stored
    chunking_mb_s = total_mb / chunk_s
    mb_s = total_mb / seconds
    round_ratios = [run.seconds / up.report.seconds for run, up in zip(chunk_runs, uploads, strict=True)]
    ratio = statistics.median(round_ratios)
    return BenchResult(
        "ingest",
        {
            "backend": backend.label, "files": len(files), "mb": total_mb, "workers": workers, "rounds": rounds,
            "mb_per_s": mb_s, "chunking_only_mb_per_s": chunking_mb_s, "ratio": ratio,
            "round_ratios": [round(r, 3) for r in round_ratios],
            "chunks": report.chunks, "chunks_per_s": report.chunks / seconds,
            "chunking_only_chunks": chunk_count, "stored_passages": stored, "file_errors": len(report.errors),
            "seconds": seconds, "chunking_only_seconds": chunk_s,
            # Where an upload's time goes: the workers chunk as they do alone (more CPU here means they ran
            # slower beside this process); this process embeds and stores on the other core.
            "workers_cpu_s_alone": statistics.median(run.workers_cpu_s for run in chunk_runs),
            "workers_cpu_s_upload": statistics.median(up.workers_cpu_s for up in uploads),
            "uploader_cpu_s": statistics.median(up.own_cpu_s for up in uploads),
        },
        goals={"end to end >= 0.8x chunking alone": ratio >= 0.8,
               "every chunk stored": all(up.stored == up.report.chunks == chunk_count for up in uploads)},
        notes=[f"chunking runs in {workers} worker process(es); embedding (hash) and storing run in this "
               "process, overlapped with it",
               f"{rounds} rounds of (chunking alone, upload to a new store), alternating which runs first; ratio: the "
               "median of round_ratios (each round's chunking-alone seconds / upload seconds); seconds: medians"],
    )


if __name__ == "__main__":  # pragma: no cover
    print(asyncio.run(asyncio.to_thread(run, True)).table())
