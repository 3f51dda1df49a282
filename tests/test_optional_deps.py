"""The runtime without its optional extras: what a script or CI user gets from a plain ``pip install letta-nb``.

Jupyter, ipywidgets, matplotlib (the ``notebook`` extra) and the tree-sitter grammars (the ``code`` extra)
are made unimportable in a child process by a meta-path finder installed from a ``sitecustomize`` on
``PYTHONPATH`` (as if they were not installed; the parent keeps its own imports). There ``import letta_nb``,
``connect``, creating an agent, a turn, an upload and the offline demo must work, and each feature that
needs an extra must say which one at its point of use: an ``OptionalDependencyError`` for plots and the chat
widget, a text-chunking fallback with an ``OptionalDependencyWarning`` for code files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the backport (a dependency there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

# What the extras install (pyproject.toml) and a user without them cannot import.
BLOCKED = ("IPython", "ipykernel", "ipywidgets", "jupyterlab", "notebook", "nbclient", "nbformat", "matplotlib",
           "traitlets", "tree_sitter")

SITECUSTOMIZE = f"""
import importlib.abc, sys

BLOCKED = {BLOCKED!r}
attempts = []

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") or name.startswith(b + "_") for b in BLOCKED):
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by tests/test_optional_deps.py)",
                                      name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
sys.modules["_letta_nb_blocked_attempts"] = type(sys)("_letta_nb_blocked_attempts")
sys.modules["_letta_nb_blocked_attempts"].attempts = attempts
"""

SCRIPT = r"""
import json, sys, warnings
from pathlib import Path

import letta_nb
from letta_nb.errors import OptionalDependencyError

out = {"after_import": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED_ROOTS)}
client = letta_nb.connect(sys.argv[1])
agent = client.agents.create(name="sam", model="offline",
                             memory_blocks=[{"label": "persona", "value": "A concise research assistant."},
                                            {"label": "human", "value": ""}])
r = client.agents.messages.create(agent.id, "My name is Ada.")
out["reply"] = r.text
out["human"] = client.agents.blocks.retrieve("sam", "human").value
out["steps_rows"] = len(letta_nb.probes.steps(client))

try:
    letta_nb.probes.plot_latency("tools", client)
    out["plot"] = "no error"
except OptionalDependencyError as e:
    out["plot"] = str(e)

try:
    letta_nb.ChatWidget
    out["widget"] = "no error"
except OptionalDependencyError as e:
    out["widget"] = str(e)

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = client.agents.files.upload(agent.id, sys.argv[2], progress=False)
out["upload"] = [(f.status, f.splitter, f.chunks) for f in report.files]
out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
hits = client.agents.passages.search(agent.id, "tokenize the input", top_k=1)
out["hit"] = hits[0].text if hits else ""
client.close()
out["loaded_blocked"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED_ROOTS)
out["attempts"] = sorted(set(sys.modules["_letta_nb_blocked_attempts"].attempts))
print(json.dumps(out))
"""


@pytest.fixture
def without_extras(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MPL"))}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), LETTA_NB_HOME=str(tmp_path / "home"))
    return env


def _run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240)


def test_the_runtime_works_without_the_extras_and_names_them_at_the_point_of_use(
        tmp_path: Path, without_extras: dict[str, str]) -> None:
    code = tmp_path / "tok.py"
    code.write_text(textwrap.dedent('''
        def tokenize(text: str) -> list[str]:
            """Tokenize the input by whitespace."""
            return text.split()


        class Lexer:
            def __init__(self, source: str) -> None:
                self.source = source
    '''))
    script = f"BLOCKED_ROOTS = {BLOCKED!r}\n" + SCRIPT
    proc = _run(without_extras, "-c", script, str(tmp_path / "s.db"), str(code), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["after_import"] == [] and out["loaded_blocked"] == []  # nothing of the extras got in
    assert out["human"] == "Name: Ada" and out["reply"] and out["steps_rows"] >= 1
    assert "pip install 'letta-nb[notebook]'" in out["plot"] and "matplotlib" in out["plot"]
    assert "pip install 'letta-nb[notebook]'" in out["widget"] and "ipywidgets" in out["widget"]
    [(status, splitter, chunks)] = out["upload"]
    assert status == "added" and chunks >= 1
    assert splitter == "sentence (no tree-sitter grammar for python: pip install 'letta-nb[code]')"
    assert any(w.startswith("OptionalDependencyWarning: python files are chunked as plain text")
               and "pip install 'letta-nb[code]'" in w for w in out["warnings"]), out["warnings"]
    assert "def tokenize" in out["hit"]
    # the blocker really stood in the way (a test that cannot fail would not show this)
    assert any(a.startswith("tree_sitter") for a in out["attempts"]) and "matplotlib" in out["attempts"]


def test_the_offline_demo_runs_without_the_extras(tmp_path: Path, without_extras: dict[str, str]) -> None:
    proc = _run(without_extras, "-m", "letta_nb", "demo", "--store", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ada" in proc.stdout


def test_the_extras_hold_what_moved_and_dev_pulls_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for name in ("matplotlib", "jupyterlab", "ipywidgets", "ipykernel", "tree-sitter"):
        assert name not in core, f"{name} is optional: it belongs in an extra, not the core dependencies"
    notebook = " ".join(extras["notebook"])
    assert all(n in notebook for n in ("jupyterlab", "notebook>=7", "ipykernel", "ipywidgets", "matplotlib",
                                       "nbclient"))
    assert sum(d.startswith("tree-sitter") for d in extras["code"]) == 11  # the library and ten grammars
    [pulled] = [d[len("letta-nb["):-1].split(",") for d in extras["dev"] if d.startswith("letta-nb[")]
    assert {"notebook", "code"} <= set(pulled)  # `pip install -e ".[dev]"` runs every test
