"""The README's first command (the offline demo) and the benchmark CLI, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_writes_and_recalls_memory():
    out = _run("-m", "letta_nb", "demo")
    assert "tools core_memory_append" in out
    assert 'From my core memory: "Name: Ada"' in out
    assert "From my archival memory: \"the MemGPT paper pages memory" in out
    assert "nothing in my memory matches" in out  # says plainly what it does not know
    assert "archival memory holds 1 passage(s)" in out
    assert "llm" in out and "commit" in out  # per-step timings are shown


def test_bench_quick_json_reports_ratios_against_same_run_baselines():
    data = json.loads(_run("-m", "letta_nb.bench", "step", "concurrency", "--quick", "--json"))
    step, conc = data["step"], data["concurrency"]
    for key in ("p50_overhead_ms", "p99_overhead_ms", "late_vs_early_ratio", "late_vs_early_paired",
                "baseline_commit_ms"):
        assert step[key] > 0
    assert step["stored_messages"] == 3 * step["messages"]
    for key in ("wall_s", "ideal_s", "ratio", "lost", "order_violations"):
        assert key in conc
    assert conc["lost"] == 0 and conc["order_violations"] == 0
    assert conc["ratio"] == conc["wall_s"] / conc["ideal_s"]


def test_bench_unknown_name_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown benchmark 'nope'; available: step, concurrency" in proc.stderr
