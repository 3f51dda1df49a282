"""The shipped notebooks, executed top to bottom by a real IPython kernel (nbclient), with a temporary store.

The kernel is this interpreter (a temporary ``python3`` kernelspec first on JUPYTER_PATH), so the test runs
the letta_nb under test whatever other kernels the machine has. Outputs are checked for what each cell
is there to show, not only for the absence of errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def this_python_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (letta_nb tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return "python3"


def execute(name: str, kernel: str, cwd: Path) -> Any:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def find_cell(nb: Any, source_start: str) -> Any:
    """The code cell whose source is ``source_start``, else the one cell whose source starts with it."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    exact = [c for c in code if c.source == source_start]
    (cell,) = exact or [c for c in code if c.source.startswith(source_start)]
    return cell


def cell_text(nb: Any, source_start: str) -> str:
    """Everything a cell printed or displayed, all mime types joined."""
    cell = find_cell(nb, source_start)
    parts = []
    for out in cell.outputs:
        assert out.output_type != "error", f"{source_start!r} raised {out.ename}: {out.evalue}"
        parts.append(out.get("text", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_quickstart_runs_end_to_end(this_python_kernel: str, tmp_path: Path, letta_home: Path) -> None:
    nb = execute("01_quickstart.ipynb", this_python_kernel, tmp_path)
    assert f"store {letta_home / 'letta_nb.db'}" in cell_text(nb, "%load_ext letta_nb")
    assert "core_memory_append(label='human'" in cell_text(nb, "%%letta sam")
    assert "Name: Ada" in cell_text(nb, "%letta memory")
    assert "MemGPT paper pages memory" in cell_text(nb, "%letta archival search")
    assert "From my archival memory" in cell_text(nb, "r.text, r.timings")
    assert "user_message" in cell_text(nb, "r")  # the Response's HTML view
    assert "word_count returned: 4" in cell_text(nb, '%%letta\n/call word_count')
    assert "<table" in cell_text(nb, "%letta stats steps")
    assert "sam" in cell_text(nb, "%letta agents")
    # A second run on the same store starts over (``create --replace``) instead of failing.
    nb = execute("01_quickstart.ipynb", this_python_kernel, tmp_path)
    assert "Name: Ada" in cell_text(nb, "%letta memory")


def test_chat_widget_notebook_runs_and_its_widgets_work(this_python_kernel: str, tmp_path: Path) -> None:
    nb = execute("02_chat_widget.ipynb", this_python_kernel, tmp_path)
    for source in ("%letta chat ada", "%letta create slowpoke"):
        views = [o for o in find_cell(nb, source).outputs
                 if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(views) == 1, source
    assert 'Got it - I saved "Name: Ada"' in cell_text(nb, "scripted = ")
    assert "⚙ core_memory_append · success" in cell_text(nb, "[step.title")
