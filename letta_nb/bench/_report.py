"""Benchmark results: a named set of numbers, printed as a table or as JSON, each with the host's calibration.

Why a calibration: figures from different hosts (a laptop, a loaded 2-core CI box) differ by several times for
the same code, so every result carries two fixed workloads measured in the same process: a pure-Python loop
of 10^7 additions (what the runtime's own code pays) and a numpy 512x512 float64 matmul x 20 (what BLAS pays).
Both are CPU seconds of the measuring thread/process (``time.thread_time`` / ``time.process_time``), so a host
that is merely busy shows less than its wall time would; wall seconds are kept beside them. Measured once per
process, on first use (``host_calibration``), about a second here.

Why the steal share: on a virtual machine the hypervisor can take the CPU away (``steal`` in ``/proc/stat``):
on the shared 2-core VM these benchmarks were tuned on, up to 39% of all CPU time was stolen during a
``bench concurrency`` round, which then ran at 1.9x the ratio of a round with 5% stolen, while the calibration
(CPU seconds, which exclude stolen time) rose only by about half (0.41-0.53 s to 0.65-0.78 s). Each
result says what share of the host's CPU time was stolen while it was measured (Linux; omitted elsewhere), so
a figure can be judged against the host it was taken on.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BenchResult", "cpu_times", "host_calibration", "percentile", "steal_share"]

CALIBRATION_ADDITIONS = 10_000_000
CALIBRATION_MATMULS = 20
CALIBRATION_SIZE = 512


_PROC_STAT = "/proc/stat"


def cpu_times(path: str = _PROC_STAT) -> list[int] | None:
    """The host's aggregate CPU times (``/proc/stat``'s ``cpu`` line, in ticks: user, nice, system, idle,
    iowait, irq, softirq, steal, ...), or None where there is no such file (not Linux)."""
    try:
        with open(path) as f:
            first = f.readline().split()
    except OSError:
        return None
    return [int(x) for x in first[1:]] if first and first[0] == "cpu" else None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the host's CPU time the hypervisor took (``steal``) between two :func:`cpu_times`; None if
    either is missing or no time passed. Guest time is already counted in user time, so it is left out."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(delta)
    return delta[7] / total if total > 0 else None


_measured_since: list[int] | None = cpu_times()  # when the current benchmark began: the previous result, or import


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@functools.lru_cache(maxsize=1)
def host_calibration() -> dict[str, float]:
    """Seconds this host takes for the fixed workloads: ``python_loop_s`` (10^7 additions in a pure-Python
    loop, thread CPU time) and ``numpy_matmul_s`` (20 matmuls of 512x512 float64, process CPU time: BLAS may
    use several threads), each with its wall time (``*_wall_s``). Cached: one measurement per process."""
    w0, c0 = time.perf_counter(), time.thread_time()
    total = 0
    for i in range(CALIBRATION_ADDITIONS):
        total += i
    loop_cpu, loop_wall = time.thread_time() - c0, time.perf_counter() - w0
    a = np.random.default_rng(0).standard_normal((CALIBRATION_SIZE, CALIBRATION_SIZE))
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(CALIBRATION_MATMULS):
        a @ a
    np_cpu, np_wall = time.process_time() - c0, time.perf_counter() - w0
    return {"python_loop_s": loop_cpu, "python_loop_wall_s": loop_wall,
            "numpy_matmul_s": np_cpu, "numpy_matmul_wall_s": np_wall}


def calibration_line(steal: float | None = None) -> str:
    """The host calibration as one line of a table, with the CPU steal share during the run if known."""
    c = host_calibration()
    line = (f"host: 10^7 Python additions {c['python_loop_s']:.3g} s CPU ({c['python_loop_wall_s']:.3g} s wall); "
            f"numpy 512x512 matmul x20 {c['numpy_matmul_s']:.3g} s CPU ({c['numpy_matmul_wall_s']:.3g} s wall)")
    return line if steal is None else f"{line}; CPU stolen by the hypervisor during the run {steal:.0%}"


@dataclass
class BenchResult:
    name: str
    numbers: dict[str, Any]
    goals: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Share of the host's CPU time stolen since the previous result was made (or this module imported): in a
    # ``python -m letta_nb.bench`` run, this benchmark's own run. None: not measurable here.
    steal: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        global _measured_since
        now = cpu_times()
        self.steal = steal_share(_measured_since, now)
        _measured_since = now

    def table(self) -> str:
        width = max(len(k) for k in self.numbers) + 2
        lines = [f"== bench {self.name} =="]
        for k, v in self.numbers.items():
            if isinstance(v, list) and v and all(isinstance(row, dict) for row in v):  # a ranking: a row each
                lines.append(k)
                lines += ["  " + "  ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in row.values())
                          for row in v]
                continue
            lines.append(f"{k:<{width}}{v:.4g}" if isinstance(v, float) else f"{k:<{width}}{v}")
        for goal, ok in self.goals.items():
            lines.append(f"goal {goal}: {'met' if ok else 'NOT met'}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(calibration_line(self.steal))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        host: dict[str, float] = dict(host_calibration())
        if self.steal is not None:
            host["cpu_steal_share"] = self.steal
        return {**self.numbers, "goals": self.goals, "host": host}


def dump(results: list[BenchResult]) -> str:
    return json.dumps({r.name: r.to_json() for r in results}, indent=2, default=float)
