"""``bench startup``: how long ``%load_ext letta_nb`` and the first ``%letta`` take in a fresh interpreter.

Every sample is a new subprocess (a kernel starts cold; an in-process repeat would find every module
already imported). A ``letta`` sample creates an IPython ``InteractiveShell`` first -- a kernel has IPython
loaded before any extension -- then times the cell ``%load_ext letta_nb`` (import, settings, register
magics: the store is opened by the first command that needs it) and, right after it, the cell ``%letta
agents`` (which opens the store and starts the runtime thread while the warming thread imports SQLAlchemy,
numpy, pandas: the worst case for warming). Their sum is what a user waits for before seeing the first
table; it must not grow when load_ext shrinks (issue 19: the work moves, it is not added). A ``warm`` sample
waits for the warming thread before the first command (a user who paused). An ``import``
sample times a bare ``import letta_nb`` (a script's cost), a ``baseline`` sample a bare ``import IPython``.
The kinds alternate round by round, so a busy host slows them alike; medians are reported.
Goal: load_ext <= 2x ``import IPython``, and none of the heavy modules below imported by ``%load_ext``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from letta_nb.bench._report import BenchResult

__all__ = ["HEAVY", "run"]

# What `%load_ext letta_nb` must not import (each costs 0.05-0.25 s cold): the first command that needs one pays.
HEAVY = ("sqlalchemy", "numpy", "pandas", "matplotlib", "openai", "httpx", "tiktoken", "llama_index",
         "markdown_it", "ipywidgets", "opentelemetry.sdk", "aiosqlite", "letta_nb.store.store", "letta_nb.client")

_PROBE = r"""
import json, sys, time
kind = sys.argv[1]
t = time.perf_counter()
if kind == "import":
    import letta_nb
    print(json.dumps({"import_letta_nb_s": time.perf_counter() - t}))
    raise SystemExit
import IPython
ipython_import = time.perf_counter() - t
if kind == "baseline":
    print(json.dumps({"ipython_import_s": ipython_import}))
    raise SystemExit
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
seen = {}  # registered before the extension's hook: what the %load_ext cell itself imported
shell.events.register("post_execute", lambda: seen.setdefault("heavy", [m for m in sys.argv[2].split(",")
                                                                        if m in sys.modules]))
with capture_output():
    cpu, t = time.process_time(), time.perf_counter()
    assert shell.run_cell("%load_ext letta_nb").success
    load_ext = time.perf_counter() - t
    warming = getattr(sys.modules["letta_nb.notebook"], "_warming", None)
    if kind == "warm" and warming is not None:  # the user took a moment before the next cell
        warming.join()
    t = time.perf_counter()
    assert shell.run_cell("%letta agents").success
    first = time.perf_counter() - t
    cpu = time.process_time() - cpu  # every thread's CPU: the work, whatever else the host runs
    shell.run_line_magic("unload_ext", "letta_nb")
print(json.dumps({"load_ext_s": load_ext, "first_letta_s": first, "cpu_s": cpu, "heavy": seen["heavy"]}))
"""


def _sample(kind: str, home: str) -> dict[str, Any]:
    env = {**os.environ, "LETTA_NB_HOME": home, "IPYTHONDIR": os.path.join(home, "ipython")}
    out = subprocess.run([sys.executable, "-c", _PROBE, kind, ",".join(HEAVY)], capture_output=True, text=True,
                         env=env, check=True)
    sample: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return sample


def run(quick: bool = False) -> BenchResult:
    runs = 1 if quick else 7  # quick: one sample of each kind (a smoke run; medians need the full 7)
    samples: dict[str, list[dict[str, Any]]] = {"letta": [], "warm": [], "import": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_startup_") as home:
        _sample("letta", home)  # warm the OS file cache and create the store once; not counted
        for _ in range(runs):
            for kind, got in samples.items():
                got.append(_sample(kind, home))
    letta = samples["letta"]
    load_ext = statistics.median(s["load_ext_s"] for s in letta)
    ipython = statistics.median(s["ipython_import_s"] for s in samples["baseline"])
    heavy = sorted({m for s in letta + samples["warm"] for m in s["heavy"]})
    numbers: dict[str, Any] = {
        "load_ext_s": load_ext,
        "first_letta_s": statistics.median(s["first_letta_s"] for s in letta),
        "load_ext_plus_first_s": statistics.median(s["load_ext_s"] + s["first_letta_s"] for s in letta),
        "load_ext_plus_first_cpu_s": statistics.median(s["cpu_s"] for s in letta),
        "first_letta_after_warming_s": statistics.median(s["first_letta_s"] for s in samples["warm"]),
        "import_letta_nb_s": statistics.median(s["import_letta_nb_s"] for s in samples["import"]),
        "ipython_import_s": ipython,
        "runs": runs,
        "heavy_imports_at_load": ",".join(heavy) or "none",
    }
    numbers["load_ext_vs_ipython_import"] = load_ext / ipython
    return BenchResult("startup", numbers,
                       goals={"load_ext <= 2x import IPython": load_ext <= 2 * ipython,
                              "no heavy module imported by %load_ext": not heavy},
                       notes=["first_letta_s is the `%letta agents` cell run right after the %load_ext cell, while "
                              "the warming thread imports: it opens the store (and imports what is not yet imported)",
                              "load_ext_plus_first_s is the wait before the first table; compare it across versions "
                              "in the same run (it must not grow); first_letta_after_warming_s: the user paused"])
