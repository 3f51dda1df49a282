"""notebooks/20_postgres.ipynb executed in a real kernel (nbclient), against servers the project starts itself.

The notebook drives this kernel and three worker processes against one PostgreSQL coordinated by Redis and
ends with an audit of the store. The servers come from the session's fixtures (letta_nb/testing/pgserver.py
and redisserver.py), handed to the notebook as LETTA_NB_PG_URL / LETTA_NB_REDIS_URL; where either cannot be
started the test is skipped with the fixture's reason. The executed notebook must run without an error and
its own audit must read "once, in order, seq contiguous"; its pool section shows and plots both pools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from test_notebooks import this_python_kernel  # noqa: F401  (the fixture: a kernelspec running this Python)

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "20_postgres.ipynb"


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_the_postgres_notebook_runs_and_its_audit_passes(this_python_kernel, pg_store_url, redis_server,  # noqa: F811
                                                         tmp_path, monkeypatch):
    redis_server.restart()
    monkeypatch.setenv("LETTA_NB_PG_URL", pg_store_url)
    monkeypatch.setenv("LETTA_NB_REDIS_URL", redis_server.url)
    monkeypatch.setenv("LETTA_NB_SCALE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=this_python_kernel,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [_text(c) for c in nb.cells if c.cell_type == "code"]
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    reading = next(o for o in outputs if o.startswith("Reading:"))
    assert "once, in order, seq contiguous" in reading, reading
    assert "coordinated by Redis" in reading
    pool_counts = next(o for o in outputs if "checkout" in o and "sqlalchemy" in o)
    assert "checkin" in pool_counts  # the asyncpg pool shows only when two lease reads are out at once (peeks.py)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells if "checked_out" in c.source for o in c.get("outputs", []))  # its plot drawn
