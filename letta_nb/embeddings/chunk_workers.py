"""The worker processes an upload chunks in, and why they never outlive the process that started them.

forkserver (spawn where there is none), never fork: the kernel process has threads. A worker of a
``ProcessPoolExecutor`` waits for work on a queue whose write end every worker holds too, and a
forkserver child also holds the forkserver's "parent alive" pipe; so when the uploading process is
SIGKILLed (a kernel restart does that), nothing reaches EOF: the workers blocked for ever with the
forkserver behind them, ~280 MB. Each worker therefore runs a watchdog thread that waits on the
parent sentinel multiprocessing gives every child (a pipe whose write end only the parent holds: it
becomes readable when the parent is gone, however it died) and then exits at once; with its workers
gone the forkserver sees EOF and exits too. This is an event, not a poll, and it works on Linux and
macOS alike (``prctl(PR_SET_PDEATHSIG)`` would be Linux-only, and the workers' parent is the
forkserver, not the uploader).

Imported by every worker, so it imports nothing heavy.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading

__all__ = ["chunk_pool", "processes_are_safe"]


def chunk_pool(workers: int | None = None) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes for chunking: one fewer than the cores (the embedder and the store run in this
    process), 1 to 4, or the ``chunk_workers`` setting (``LETTA_NB_CHUNK_WORKERS``). They exit when this
    process does."""
    forced = _forced_workers()
    if workers is None and forced:
        workers = forced
    workers = workers or max(1, min(4, (os.cpu_count() or 2) - 1))
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                                  initializer=_exit_with_parent)


def processes_are_safe() -> bool:
    """Worker processes (forkserver/spawn) re-import ``__main__``: harmless in a notebook, a REPL or
    ``python -c``/``-m``, but a plain script without an ``if __name__ == "__main__"`` guard would run
    again in each worker. So scripts chunk in a thread unless LETTA_NB_CHUNK_WORKERS asks for processes."""
    forced = _forced_workers()
    if forced is not None:
        return forced != 0
    main = sys.modules.get("__main__")
    interactive = getattr(main, "__file__", None) is None or getattr(main, "__spec__", None) is not None
    return interactive and (os.cpu_count() or 1) > 1


def _forced_workers() -> int | None:
    """The ``chunk_workers`` setting: None (auto), 0 (a thread) or a number of processes. Imported here, not
    at the top: the workers import this module and need no settings."""
    from letta_nb.settings import current

    return current().chunk_workers


def _exit_with_parent() -> None:
    """Worker initializer: start the watchdog (see the module docstring)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:  # not a multiprocessing child: nothing to watch
        return
    threading.Thread(target=_watch, args=(parent.sentinel,), name="letta_nb-parent-watchdog", daemon=True).start()


def _watch(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # returns only once the parent is gone
    os._exit(1)  # no cleanup to run: the worker holds nothing but its own task
