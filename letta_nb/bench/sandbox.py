"""``bench sandbox``: what one sandboxed tool call costs next to a bare ``python -I`` subprocess.

Both sides do the same work: start an interpreter, read JSON arguments on stdin, add two numbers, write
JSON back, exit; both are started from the same asyncio loop. The sandboxed side is the real
``run_in_sandbox`` (bwrap namespaces, rlimits, throwaway uid or user namespace, temp files, process-group
kill) in whatever isolation this machine has, reported as ``isolation``. Rounds alternate the two sides so
that a noisy neighbour slows both alike; the ratio is the median of the per-round ratios of medians. The
goal is a sandboxed call <= 1.5x the bare subprocess.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from letta_nb.bench._report import BenchResult
from letta_nb.runtime.sandbox import capabilities, run_in_sandbox

__all__ = ["run"]

_TOOL = "def add(a: int, b: int) -> int:\n    return a + b\n"
_BARE = "import json, sys\nrequest = json.loads(sys.stdin.read())\nprint(json.dumps(request['a'] + request['b']))\n"


async def _sandboxed() -> float:
    start = time.perf_counter()
    outcome = await run_in_sandbox(_TOOL, "add", {"a": 2, "b": 3}, timeout=60)
    if not (outcome.ok and outcome.value == 5):
        raise RuntimeError(f"the sandboxed benchmark tool failed: {outcome.error}")
    return time.perf_counter() - start


async def _bare() -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-c", _BARE, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(json.dumps({"a": 2, "b": 3}).encode())
    if json.loads(out) != 5:
        raise RuntimeError("the bare benchmark subprocess failed")
    return time.perf_counter() - start


async def _rounds(rounds: int, calls: int) -> tuple[list[float], list[float], list[float]]:
    await _sandboxed()  # probe capabilities and warm the file cache; not counted
    await _bare()
    sandboxed, bare, ratios = [], [], []
    for _ in range(rounds):
        s = [await _sandboxed() for _ in range(calls)]
        b = [await _bare() for _ in range(calls)]
        sandboxed += s
        bare += b
        ratios.append(statistics.median(s) / statistics.median(b))
    return sandboxed, bare, ratios


def run(quick: bool = False) -> BenchResult:
    rounds, calls = (3, 5) if quick else (7, 15)
    sandboxed, bare, ratios = asyncio.run(_rounds(rounds, calls))
    caps = capabilities()
    sandbox_s, bare_s, ratio = statistics.median(sandboxed), statistics.median(bare), statistics.median(ratios)
    numbers = {
        "isolation": caps.isolation,
        "sandbox_call_ms": sandbox_s * 1000,
        "bare_python_call_ms": bare_s * 1000,
        "ratio_to_bare": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "sandbox_calls_per_s": 1 / sandbox_s,
        "bare_calls_per_s": 1 / bare_s,
        "rounds": rounds,
        "calls_per_round": calls,
    }
    notes = ["one call at a time; both sides start a fresh `python -I` that reads JSON and writes JSON"]
    if not caps.isolated:
        notes.append(f"not isolated on this machine: {caps.missing}")
    return BenchResult("sandbox", numbers, goals={"sandboxed call <= 1.5x bare python -I": ratio <= 1.5},
                       notes=notes)
