"""Every profiling notebook (notebooks/1x_*.ipynb) runs headless in a real kernel and ends with
DataFrames, plots and a reading of its numbers.

Executed with nbclient at the notebooks' default (small) sizes; each notebook gets its own LETTA_NB_HOME,
which the kernel inherits. Outputs are checked, not just the absence of errors: at least one DataFrame
(HTML table), at least one figure (PNG) and the final "Reading:" summary.

Each notebook runs in a child process (nbclient there, its kernel beside it), two at a time: most of a
notebook's time is a kernel starting and importing pandas and matplotlib, which a second core does as well.
The first test of the module starts them all; each test waits for its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("1[0-9]_*.ipynb"))

_EXECUTE = """
import sys, nbclient, nbformat
source, cwd, executed = sys.argv[1:]
nb = nbformat.read(source, as_version=4)
try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
finally:
    nbformat.write(nb, executed)  # the outputs so far, also those of a failed run
"""


def _execute(path: Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str], nbformat.NotebookNode | None]:
    """Run the notebook in a child process (its own LETTA_NB_HOME under ``cwd``, LETTA_NB_SCALE=1)."""
    executed = cwd / f"executed_{path.name}"
    env = {**os.environ, "LETTA_NB_SCALE": "1", "LETTA_NB_HOME": str(cwd / "letta_home")}
    proc = subprocess.run([sys.executable, "-c", _EXECUTE, str(path), str(cwd), str(executed)], env=env,
                          capture_output=True, text=True, timeout=600)
    return proc, nbformat.read(executed, as_version=4) if executed.exists() else None


@pytest.fixture(scope="module")
def executed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """The notebooks of this run's selected tests (``-k`` may pick one), started two at a time."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="notebook") as pool:
        yield {path.stem: pool.submit(_execute, path, tmp_path_factory.mktemp(path.stem)) for path in selected}


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def test_the_profiling_notebooks_are_all_here():
    names = {p.name.split("_", 1)[1] for p in NOTEBOOKS}
    assert names == {"mass_agent_creation.ipynb", "high_volume_messaging.ipynb", "tool_execution_stress.ipynb",
                     "concurrent_access.ipynb", "db_pool.ipynb", "cache_hit.ipynb", "embedder.ipynb",
                     "vector_search.ipynb", "file_ingest.ipynb", "many_kernels.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "LETTA_NB_SCALE" in tagged[0].source, path.name
        assert not outputs(nb), f"{path.name} is committed with outputs; clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_profiling_notebook_runs_headless(path: Path, executed: dict[str, Future]) -> None:
    proc, nb = executed[path.stem].result()
    assert proc.returncode == 0 and nb is not None, proc.stderr[-3000:]
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outs), "no figure was displayed"
    assert any("text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"] for o in outs), "no DataFrame"
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "Reading:" in text
    assert "Traceback" not in text and "Warning" not in text, text
