"""``bench startup``: how long ``%load_ext letta_nb`` and the first ``%letta`` take in a fresh interpreter.

Every sample is a new subprocess (a kernel starts cold; an in-process repeat would find every module
already imported). Each one creates an IPython ``InteractiveShell`` first -- a kernel has IPython loaded
before any extension -- then times ``%load_ext letta_nb`` (import, open the store, start the runtime
thread, register magics) and the first ``%letta agents`` (which pays for pandas). The baseline, measured
the same way, is a bare ``import IPython``. Medians are reported; the goal is load_ext <= 0.5 s.
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

__all__ = ["run"]

_PROBE = r"""
import json, sys, time
t = time.perf_counter()
import IPython
ipython_import = time.perf_counter() - t
if sys.argv[1] == "baseline":
    print(json.dumps({"ipython_import_s": ipython_import}))
    raise SystemExit
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
with capture_output():
    t = time.perf_counter()
    shell.run_line_magic("load_ext", "letta_nb")
    load_ext = time.perf_counter() - t
    t = time.perf_counter()
    shell.run_line_magic("letta", "agents")
    first = time.perf_counter() - t
    shell.run_line_magic("unload_ext", "letta_nb")
print(json.dumps({"load_ext_s": load_ext, "first_letta_s": first}))
"""


def _sample(kind: str, home: str) -> dict[str, float]:
    env = {**os.environ, "LETTA_NB_HOME": home, "IPYTHONDIR": os.path.join(home, "ipython")}
    out = subprocess.run([sys.executable, "-c", _PROBE, kind], capture_output=True, text=True, env=env, check=True)
    sample: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return sample


def _heavy_after_load_ext(home: str) -> list[str]:
    """Which lazily-imported heavy modules ``%load_ext`` pulled in (should be none)."""
    code = ("import sys; from IPython.core.interactiveshell import InteractiveShell as S; "
            "from traitlets.config import Config; c = Config(); c.HistoryManager.hist_file = ':memory:'; "
            "S.instance(config=c).run_line_magic('load_ext', 'letta_nb'); "
            "print(','.join(m for m in ('pandas', 'matplotlib', 'llama_index', 'ipywidgets') if m in sys.modules))")
    env = {**os.environ, "LETTA_NB_HOME": home, "IPYTHONDIR": os.path.join(home, "ipython")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    return [m for m in line.split(",") if m and not m.startswith("letta_nb:")]


def run(quick: bool = False) -> BenchResult:
    runs = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_startup_") as home:
        _sample("letta", home)  # warm the OS file cache and create the store once; not counted
        letta = [_sample("letta", home) for _ in range(runs)]
        base = [_sample("baseline", home) for _ in range(runs)]
        heavy = _heavy_after_load_ext(home)
    load_ext = statistics.median(s["load_ext_s"] for s in letta)
    numbers: dict[str, Any] = {
        "load_ext_s": load_ext,
        "first_letta_s": statistics.median(s["first_letta_s"] for s in letta),
        "ipython_import_s": statistics.median(s["ipython_import_s"] for s in base),
        "runs": runs,
        "heavy_imports_at_load": ",".join(heavy) or "none",
    }
    numbers["load_ext_vs_ipython_import"] = load_ext / numbers["ipython_import_s"]
    return BenchResult("startup", numbers, goals={"load_ext <= 0.5 s": load_ext <= 0.5,
                                                  "no pandas/matplotlib/llama_index/ipywidgets at load": not heavy},
                       notes=["first_letta_s is `%letta agents` right after loading; it imports pandas"])
