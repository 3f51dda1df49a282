"""Every profiling notebook (notebooks/1x_*.ipynb) runs headless in a real kernel and ends with
DataFrames, plots and a reading of its numbers.

Executed with nbclient at the notebooks' default (small) sizes; each test gets its own LETTA_NB_HOME,
which the kernel inherits. Outputs are checked, not just the absence of errors: at least one DataFrame
(HTML table), at least one figure (PNG) and the final "Reading:" summary.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("1[0-9]_*.ipynb"))


def run_notebook(path: Path, cwd: Path, timeout: int = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


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
def test_profiling_notebook_runs_headless(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LETTA_NB_SCALE", "1")
    nb = run_notebook(path, tmp_path)
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outs), "no figure was displayed"
    assert any("text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"] for o in outs), "no DataFrame"
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "Reading:" in text
    assert "Traceback" not in text and "Warning" not in text, text
