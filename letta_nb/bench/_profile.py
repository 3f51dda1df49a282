"""Where a benchmark's CPU goes: the runtime thread's CPU time, a cProfile pass on it, transient allocations.

Why the runtime thread: every turn runs on the runtime's event loop (runtime/loop_thread.py); the caller's
thread only waits, so profiling the caller shows a lock wait and nothing else. The profiler is switched on
and off *on the loop* (a callback), so it sees exactly the turns run in between. Wall time on a shared host
measures the neighbours too; CPU time (``time.thread_time`` read on the loop) does not, which is why the
benches report it beside the wall time.
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

__all__ = ["GCTimer", "gc_collections", "loop_cpu_s", "peak_alloc_kib", "top_costs"]

_PACKAGE = os.sep + "letta_nb" + os.sep


def _on_loop(client: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` run as a callback on the client's runtime loop; its value."""
    done, box = threading.Event(), []

    def call() -> None:
        try:
            box.append(fn())
        finally:
            done.set()

    client._thread.loop.call_soon_threadsafe(call)
    done.wait()
    return box[0]


def loop_cpu_s(client: Any) -> float:
    """CPU seconds the client's runtime thread has used so far (``time.thread_time`` read on that thread)."""
    return float(_on_loop(client, time.thread_time))


def gc_collections() -> int:
    """Garbage-collector passes so far, all generations."""
    return sum(s["collections"] for s in gc.get_stats())


class GCTimer:
    """Within ``with GCTimer() as t:``, the collector's passes (``t.passes``) and their wall time (``t.seconds``),
    whichever thread triggered them (``gc.callbacks``): how much of a run the collector took, not a guess from
    the pass count (a full pass over a thousand agents' objects costs a hundred young ones)."""

    def __init__(self) -> None:
        self.passes = 0
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.passes += 1
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GCTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def top_costs(client: Any, turns: int, run_turn: Callable[[int], Any], n: int = 5) -> list[dict[str, Any]]:
    """Run ``run_turn(i)`` ``turns`` times with cProfile on the runtime thread; the ``n`` letta_nb functions
    with the most own time, each with own and cumulative ms per turn and calls per turn. Profiled turns are
    slower than plain ones (cProfile costs per call): the ranking is the point, not the figures."""
    profiler = cProfile.Profile()
    _on_loop(client, profiler.enable)
    try:
        for i in range(turns):
            run_turn(i)
    finally:
        _on_loop(client, profiler.disable)
    rows = []
    for (path, line, func), (_, calls, own, cum, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if _PACKAGE in path:
            where = path[path.rindex(_PACKAGE) + 1:].replace(os.sep, "/")
            rows.append({"function": f"{where}:{line}({func})", "own_ms_per_turn": own * 1000 / turns,
                         "cum_ms_per_turn": cum * 1000 / turns, "calls_per_turn": calls / turns})
    rows.sort(key=lambda r: r["own_ms_per_turn"], reverse=True)
    return rows[:n]


def peak_alloc_kib(turns: int, run_turn: Callable[[int], Any]) -> float:
    """Median over ``turns`` of the peak of traced memory above its level before the turn (KiB): what a turn
    allocates and holds at once, objects made and thrown away included (tracemalloc; slows the turns)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    peaks = []
    try:
        for i in range(turns):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            run_turn(i)
            peaks.append((tracemalloc.get_traced_memory()[1] - before) / 1024)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    peaks.sort()
    return peaks[len(peaks) // 2] if peaks else float("nan")
