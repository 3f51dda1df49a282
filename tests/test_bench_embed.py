"""``python -m letta_nb.bench embed --quick --json``, run as a user would (numbers are not asserted: speed
lives in the benchmark; correctness of what it measured is)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_embed_quick_json_reports_ratios_and_loses_nothing():
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "embed", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    embed = json.loads(proc.stdout)["embed"]
    for key in ("chunks_per_s", "ideal_chunks_per_s", "ratio_to_ideal", "letta_chunks_per_s", "ratio_to_letta",
                "lost", "reordered"):
        assert key in embed
    assert embed["lost"] == 0 and embed["reordered"] == 0
    assert embed["empty_dropped"] > 0 and embed["oversized_split"] > 0  # the workload has both
    assert embed["letta_lost"] == embed["oversized_split"]  # Letta's halving cannot save an oversized input
    assert embed["ratio_to_ideal"] == pytest.approx(embed["chunks_per_s"] / embed["ideal_chunks_per_s"])
    assert embed["ratio_to_letta"] == pytest.approx(embed["chunks_per_s"] / embed["letta_chunks_per_s"])
    assert embed["server_max_in_flight"] <= 8 and embed["server_5xx"] > 0
    assert set(embed["goals"]) == {">= 0.8 of ideal", ">= 3x Letta's scheme", "0 lost, 0 reordered"}
