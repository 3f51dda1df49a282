"""letta_nb type-checks under its own mypy configuration: the CI gate (.ci/run), runnable with the tests.

``[tool.mypy]`` in pyproject.toml is strict on the whole package; this runs exactly what .ci/run runs
(``python -m mypy`` from the repository root, so the project config and its ``files`` apply) and fails with
mypy's own report. It reuses mypy's incremental cache (.mypy_cache, ignored by git): after .ci/run's mypy
step it takes seconds, from cold about half a minute of CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_letta_nb_type_checks_under_the_project_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}  # no stray MYPYPATH/MYPY_CACHE_DIR
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    report = proc.stdout + proc.stderr
    assert "No module named mypy" not in report, "mypy is missing: pip install -e '.[dev]' (it pins mypy)"
    assert proc.returncode == 0, f"mypy found errors in letta_nb (fix them; see [tool.mypy]):\n{report}"
    # The config's `files` is what was checked: every module of the package, not a smaller selection.
    modules = len(list((REPO / "letta_nb").rglob("*.py")))
    assert proc.stdout.strip() == f"Success: no issues found in {modules} source files", report
