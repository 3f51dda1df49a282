"""Every snippet of README.md, run in order as a newcomer would paste it, after the README's first command.

A newcomer runs the first set-up command (the quickstart, in the default store), then pastes the README's
snippets in order into the same store. This test does the same on a fresh store (``LETTA_NB_HOME`` in a
temporary directory), with the repository's ``notebooks/`` and ``README.md`` copied into the working directory:

- the set-up commands (the bash block with ``pip install``) are not run here (installing is CI's job): what
  follows each install must be a line of ``.ci/run``, and ``.ci/run``'s install must cover the extras the
  README installs. The first command's own work (the quickstart, leaving the executed notebook where the
  README says) is run, before everything else;
- ``ipython`` blocks run in one real kernel (nbclient), in order; each paragraph of a block is a cell;
- ``python`` blocks are pasted into one script, in order, run by a fresh interpreter; a model or embedder
  that needs a server reaches the loopback server through the environment (``OPENAI_BASE_URL``,
  ``OLLAMA_BASE_URL``), as a newcomer's environment would point at theirs;
- other ``bash`` blocks run line by line (they are local: ``python -m letta_nb demo``);
- ``text`` blocks are not commands; a block preceded by ``<!-- tests/test_readme.py: not run (WHY) -->`` is not
  run, for the reason it gives. A block of any other language fails the test: nothing is skipped silently.

What ran, and what did not and why, is printed (``pytest -s``) and checked against the README's blocks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from letta_nb.testing import LoopbackServer

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the backport (a dependency there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
NOT_RUN = re.compile(r"<!-- tests/test_readme\.py: not run \((?P<why>.+)\) -->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the README's reason, when it says the test does not run this block

    @property
    def kind(self) -> str:
        if self.not_run is not None:
            return "not run"
        if self.lang == "bash" and re.search(r"^pip install", self.code, re.M):
            return "set-up"
        documents = {"text": "text", "toml": "text", "json": "text"}  # shown, not commands (a config file, a tree)
        return {"python": "python", "ipython": "kernel", "bash": "shell", **documents}.get(self.lang, "unknown")


def readme_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = NOT_RUN.fullmatch(lines[start - 1].strip()) if start else None
        blocks.append(Block(fence["lang"], "\n".join(body) + "\n", start + 1, marker["why"] if marker else None))
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _setup_commands() -> list[tuple[str, str]]:
    """(install, then) for each line of the README's set-up block: ``pip install X && THEN``."""
    (setup,) = [b for b in BLOCKS if b.kind == "set-up"]
    commands = []
    for line in setup.code.splitlines():
        install, _, then = line.partition(" && ")
        assert install.startswith("pip install ") and then, f"README.md:{setup.line}: {line!r}: no 'pip install X && Y'"
        commands.append((install, then))
    return commands


def _extras(spec: str) -> set[str]:
    """The extras a ``pip install -e ".[a,b]"`` installs, following the project's self-references (dev)."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    todo = set(re.findall(r"\w[\w-]*", spec[spec.index("[") + 1:spec.index("]")])) if "[" in spec else set()
    seen: set[str] = set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for dep in optional[extra]:
            ref = re.fullmatch(r"letta-nb\[(.+)\]", dep)
            if ref:
                todo |= set(ref[1].split(",")) - seen
    return seen


def test_every_block_is_run_or_says_why_not() -> None:
    kinds = [b.kind for b in BLOCKS]
    assert "unknown" not in kinds, [f"README.md:{b.line} ```{b.lang}" for b in BLOCKS if b.kind == "unknown"]
    for kind in ("set-up", "kernel", "python", "shell"):
        assert kind in kinds, kind
    print("\n".join(f"README.md:{b.line}: {b.kind}" + (f" ({b.not_run})" if b.not_run else "") for b in BLOCKS))


def test_setup_commands_are_what_ci_runs() -> None:
    ci_lines = [line.strip() for line in CI.read_text().splitlines()]
    (ci_install,) = [line for line in ci_lines if re.match(r"python3 -m pip install .* -e ", line)]
    ci_extras = _extras(shlex.split(ci_install)[-1])
    for install, then in _setup_commands():
        assert _extras(shlex.split(install)[-1]) <= ci_extras, f"{install!r}: .ci/run installs {sorted(ci_extras)}"
        # .ci/run says python3 where the README says python (CI machines may have no `python`)
        assert then in ci_lines or then.replace("python ", "python3 ", 1) in ci_lines, \
            f"the README runs {then!r}; .ci/run must run the same line"
    assert "build/" in (ROOT / ".gitignore").read_text().split()  # where the first command leaves its notebook


def test_every_jupyter_command_the_readme_names_is_installed_by_the_dev_extra() -> None:
    """`jupyter lab`, `jupyter notebook` (Notebook 7, which the `notebook` extra installs), `jupyter execute`."""
    named = set(re.findall(r"\bjupyter (\w+)", README.read_text()))
    assert {"lab", "notebook", "execute"} <= named
    procs = {sub: subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), sub, "--version"], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for sub in sorted(named)}  # at once
    for sub, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0 and stdout.strip(), f"jupyter {sub}: {stderr[-1000:]}"


@dataclass(frozen=True)
class Newcomer:
    work: Path  # like the repository's root: notebooks/ and README.md
    env: dict[str, str]  # a fresh store (LETTA_NB_HOME), this interpreter first on PATH and as the kernel
    first: subprocess.CompletedProcess[str]  # the README's first command (after its install)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    """The README's first command, run once in a fresh working directory and store, for the tests below."""
    tmp = tmp_path_factory.mktemp("newcomer")
    work = tmp / "work"
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    shutil.copy(README, work / "README.md")
    spec_dir = tmp / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (letta_nb README test)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LETTA_NB_", "OPENAI_", "OLLAMA_"))}
    env.update(JUPYTER_PATH=str(tmp / "jupyter"), IPYTHONDIR=str(tmp / "ipython"), LETTA_NB_HOME=str(tmp / "home"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    (_, first), *_ = _setup_commands()
    proc = subprocess.run(["bash", "-c", first], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    with pytest.MonkeyPatch.context() as mp:  # nbclient finds the kernelspec in this process's environment
        mp.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
        yield Newcomer(work, env, proc)


def _kernel_cells(block: Block) -> list[str]:
    """A block's paragraphs, each a cell (a ``%%`` cell magic must open its cell)."""
    return [p.strip("\n") for p in re.split(r"\n\s*\n", block.code) if p.strip()]


def _outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_the_first_command_leaves_the_executed_quickstart_where_the_readme_says(newcomer: Newcomer) -> None:
    assert newcomer.first.returncode == 0, newcomer.first.stderr[-3000:]
    executed = re.search(r"`(build/[\w.]+\.ipynb)`", README.read_text())
    assert executed, "the README does not say where the executed quickstart is"
    nb = nbformat.read(newcomer.work / executed[1], as_version=4)
    shown = _outputs_text(nb)
    assert "llm_ms" in shown and "total_ms" in shown and "<table" in shown  # step timings as DataFrames


def test_every_snippet_runs_in_order_after_the_first_command(newcomer: Newcomer) -> None:
    assert newcomer.first.returncode == 0, newcomer.first.stderr[-3000:]
    work, env = newcomer.work, newcomer.env
    ran = [f"set-up: {_setup_commands()[0][1]}"]

    # The notebook blocks, one kernel, in order.
    cells = [(b, c) for b in BLOCKS if b.kind == "kernel" for c in _kernel_cells(b)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for _, c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(work)}}).execute(env=env)
    for (block, source), cell in zip(cells, nb.cells, strict=True):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"README.md:{block.line} cell {source!r}: {errors[0].ename}: {errors[0].evalue}"
    shown = _outputs_text(nb)
    assert not cells or ("Name: Ada" in shown and "MemGPT paper" in shown and "total_ms" in shown)
    ran += [f"kernel: README.md:{b.line} ({len(_kernel_cells(b))} cells)" for b in BLOCKS if b.kind == "kernel"]

    # The Python blocks, pasted into one script, with servers found through the environment.
    python = [b for b in BLOCKS if b.kind == "python"]
    script = "".join(f"# ---- README.md:{b.line}\nprint('README.md:{b.line}', flush=True)\n{b.code}" for b in python)
    (work / "readme_snippets.py").write_text(script)
    with LoopbackServer() as srv:
        server_env = {**env, "OPENAI_BASE_URL": srv.base_url, "OPENAI_API_KEY": "sk-readme-test",
                      "OLLAMA_BASE_URL": srv.base_url}
        proc = subprocess.run([sys.executable, "readme_snippets.py"], cwd=work, env=server_env, capture_output=True,
                              text=True, timeout=600)
    reached = re.findall(r"^README\.md:(\d+)$", proc.stdout, re.M)
    assert proc.returncode == 0, f"failed in the block at README.md:{reached[-1] if reached else '?'}:\n" \
                                 f"{proc.stderr[-4000:]}"
    assert reached == [str(b.line) for b in python]
    ran += [f"python: README.md:{b.line}" for b in python]

    # Other shell blocks, line by line.
    for block in (b for b in BLOCKS if b.kind == "shell"):
        for line in filter(None, (ln.split(" #")[0].strip() for ln in block.code.splitlines())):
            proc = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, f"README.md:{block.line}: {line!r}:\n{proc.stderr[-3000:]}"
            ran.append(f"shell: README.md:{block.line}: {line}")

    ran += [f"not run: README.md:{b.line} ({b.not_run})" for b in BLOCKS if b.kind == "not run"]
    ran += [f"not a command: README.md:{b.line} ```{b.lang}" for b in BLOCKS if b.kind == "text"]
    print("\n".join(ran))
