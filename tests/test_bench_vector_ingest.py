"""``python -m letta_nb.bench vector ingest --quick --json`` runs as a user would and reports its keys.

Speeds are not asserted (the machine is shared); correctness is: exact recall, every chunk stored.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_vector_and_ingest_quick_json():
    proc = subprocess.run([sys.executable, "-m", "letta_nb.bench", "vector", "ingest", "--quick", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    vector, ingest = data["vector"], data["ingest"]
    for key in ("p50_ms", "numpy_p50_ms", "ratio_to_numpy", "recall_at_10", "scan_p50_ms"):
        assert vector[key] > 0
    assert vector["ratio_to_numpy"] == vector["p50_ms"] / vector["numpy_p50_ms"]
    assert vector["recall_at_10"] == 1.0 and vector["scan_recall_at_10"] == 1.0  # both paths are exact
    assert ("vec0_recall_at_10" in vector) == (vector["vec0"] is not None)  # vec0 only where sqlite-vec loads
    assert vector.get("vec0_recall_at_10", 1.0) == 1.0
    for key in ("mb_per_s", "chunking_only_mb_per_s", "ratio", "chunks"):
        assert ingest[key] > 0
    # One round (--quick): the median of one pair is that pair's speed ratio.
    assert ingest["rounds"] == len(ingest["round_ratios"]) == 1
    assert ingest["ratio"] == pytest.approx(ingest["mb_per_s"] / ingest["chunking_only_mb_per_s"], rel=1e-9)
    assert ingest["round_ratios"] == [round(ingest["ratio"], 3)]
    assert ingest["stored_passages"] == ingest["chunks"] == ingest["chunking_only_chunks"]
    assert ingest["file_errors"] == 0
