"""``python -m letta_nb.bench multikernel --quick --json``, run as a user would.

Speed is the benchmark's to report (2 shared cores make the wall ratio noisy), not asserted here; what is
asserted is that it measured what it says, and that many processes lost and duplicated nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_multikernel_quick_json_reports_the_ratio_and_loses_nothing() -> None:
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "multikernel", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    bench = json.loads(proc.stdout)["multikernel"]
    for key in ("processes", "agents", "messages_per_agent_per_process", "rounds", "turns_per_run", "multi_wall_s",
                "single_wall_s", "wall_ratio", "ratio_min", "ratio_max", "round_ratios", "lease_waits",
                "lease_wait_ms", "lease_wait_max_ms", "leases_taken_expired", "refused_stale_commits", "stale_retries",
                "failed_turns", "lost", "duplicated", "order_violations", "seq_errors", "half_steps", "integrity_ok"):
        assert key in bench, key
    shape = (bench["processes"], bench["agents"], bench["messages_per_agent_per_process"], bench["rounds"])
    assert shape == (2, 4, 4, 2)
    assert bench["turns_per_run"] == 2 * 4 * 4
    assert len(bench["round_ratios"]) == 2 and bench["ratio_min"] <= bench["wall_ratio"] <= bench["ratio_max"]
    assert bench["multi_wall_s"] > 0 and bench["single_wall_s"] > 0
    assert (bench["lost"], bench["duplicated"], bench["failed_turns"]) == (0, 0, 0)
    assert (bench["order_violations"], bench["seq_errors"], bench["half_steps"]) == (0, 0, 0)
    assert bench["integrity_ok"] is True
    assert isinstance(bench["lease_waits"], int) and isinstance(bench["refused_stale_commits"], int)  # probes.leases()
    assert 0 <= bench["lease_wait_max_ms"] <= bench["lease_wait_ms"]  # one wait is at most the sum of them
    assert bench["goals"] == {"0 lost, 0 duplicated": True, "0 failed turns": True,
                              "order, seq, steps, integrity kept": True}
