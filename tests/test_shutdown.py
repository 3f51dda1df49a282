"""Leaving the process: an open runtime closes cleanly at interpreter exit, with nothing on stderr.

Real subprocesses (terminal IPython, plain scripts) over real store files; the assertion is on what a user
sees at exit (no traceback, exit status 0) and on what the store kept.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("IPython")

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LETTA_NB_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "PYTHONWARNINGS": "error", "IPYTHONDIR": str(tmp_path / "ipython")}
    return subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def _script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", textwrap.dedent(body)], tmp_path)


def _assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert "cannot schedule new futures" not in proc.stderr + proc.stdout


def test_terminal_ipython_load_ext_then_exit_prints_no_traceback(tmp_path: Path) -> None:
    proc = _run([sys.executable, "-m", "IPython", "--no-banner", "--simple-prompt", "--colors=NoColor"], tmp_path,
                stdin="%load_ext letta_nb\nexit\n")
    _assert_clean(proc)
    assert "letta_nb: store" in proc.stdout  # the extension did load


def test_terminal_ipython_after_a_search_exits_cleanly_and_keeps_the_turns(tmp_path: Path) -> None:
    cells = "\n".join([
        "%load_ext letta_nb",
        "%letta create sam",
        "%letta archival insert The MemGPT paper pages memory like an OS. --agent sam",
        "%letta archival search paging --agent sam",
        "exit",
    ]) + "\n"
    proc = _run([sys.executable, "-m", "IPython", "--no-banner", "--simple-prompt", "--colors=NoColor"], tmp_path,
                stdin=cells)
    _assert_clean(proc)
    with sqlite3.connect(tmp_path / "home" / "letta_nb.db") as db:
        assert db.execute("SELECT count(*) FROM passages").fetchone() == (1,)


def test_a_script_that_never_closes_its_client_exits_cleanly(tmp_path: Path) -> None:
    proc = _script(tmp_path, """
        import letta_nb
        client = letta_nb.connect("s.db")
        print(client.agents.create("sam").name)
    """)
    _assert_clean(proc)
    assert proc.stdout.strip() == "sam"


def test_a_script_with_an_open_vector_store_exits_cleanly_and_its_writes_are_kept(tmp_path: Path) -> None:
    proc = _script(tmp_path, """
        import letta_nb
        client = letta_nb.connect("s.db")
        agent = client.agents.create("sam")
        client.agents.passages.create(agent, "The MemGPT paper pages memory like an OS.")
        print(len(client.agents.passages.search(agent, "paging", top_k=1)))
        client.agents.messages.create(agent, "My name is Ada.")
    """)
    _assert_clean(proc)
    assert proc.stdout.strip() == "1"
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT count(*) FROM messages WHERE role = 'user'").fetchone() == (1,)


def test_a_script_closing_its_client_in_an_atexit_hook_exits_cleanly(tmp_path: Path) -> None:
    """``atexit`` hooks run after concurrent.futures has shut its pools: the close must not need them then."""
    proc = _script(tmp_path, """
        import atexit
        import letta_nb
        client = letta_nb.connect("s.db")
        agent = client.agents.create("sam")
        client.agents.passages.search(agent, "anything")
        atexit.register(client.close)
    """)
    _assert_clean(proc)
