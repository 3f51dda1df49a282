"""``python -m letta_nb.bench sandbox --quick --json``, run as a user would (speed is the benchmark's to report,
not asserted here; that it measured what it says is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from letta_nb.runtime.sandbox import capabilities


@pytest.mark.slow
def test_bench_sandbox_quick_json_reports_the_ratio_to_a_bare_python() -> None:
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "sandbox", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    bench = json.loads(proc.stdout)["sandbox"]
    for key in ("isolation", "sandbox_call_ms", "bare_python_call_ms", "ratio_to_bare", "ratio_min", "ratio_max",
                "sandbox_calls_per_s", "bare_calls_per_s", "rounds", "calls_per_round"):
        assert key in bench
    assert bench["isolation"] == capabilities().isolation
    assert (bench["rounds"], bench["calls_per_round"]) == (3, 5)
    assert bench["ratio_min"] <= bench["ratio_to_bare"] <= bench["ratio_max"]
    assert bench["sandbox_calls_per_s"] == pytest.approx(1000 / bench["sandbox_call_ms"])
    assert set(bench["goals"]) == {"sandboxed call <= 1.5x bare python -I"}
