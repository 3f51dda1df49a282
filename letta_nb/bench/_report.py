"""Benchmark results: a named set of numbers, printed as a table or as JSON, each with the host's calibration.

Why a calibration: figures from different hosts (a laptop, a loaded 2-core CI box) differ by several times for
the same code, so every result carries two fixed workloads measured in the same process: a pure-Python loop
of 10^7 additions (what the runtime's own code pays) and a numpy 512x512 float64 matmul x 20 (what BLAS pays).
Both are CPU seconds of the measuring thread/process (``time.thread_time`` / ``time.process_time``), so a host
that is merely busy shows less than its wall time would; wall seconds are kept beside them. Measured once per
process, on first use (``host_calibration``), about a second here.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BenchResult", "host_calibration", "percentile"]

CALIBRATION_ADDITIONS = 10_000_000
CALIBRATION_MATMULS = 20
CALIBRATION_SIZE = 512


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


def calibration_line() -> str:
    """The host calibration as one line of a table."""
    c = host_calibration()
    return (f"host: 10^7 Python additions {c['python_loop_s']:.3g} s CPU ({c['python_loop_wall_s']:.3g} s wall); "
            f"numpy 512x512 matmul x20 {c['numpy_matmul_s']:.3g} s CPU ({c['numpy_matmul_wall_s']:.3g} s wall)")


@dataclass
class BenchResult:
    name: str
    numbers: dict[str, Any]
    goals: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
        lines.append(calibration_line())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**self.numbers, "goals": self.goals, "host": host_calibration()}


def dump(results: list[BenchResult]) -> str:
    return json.dumps({r.name: r.to_json() for r in results}, indent=2, default=float)
