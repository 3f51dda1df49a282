"""What ``import letta_nb`` and ``%load_ext letta_nb`` import, in a fresh interpreter (issue 19).

``%load_ext`` is on every notebook's first cell, so it imports only what its one line needs: IPython, the
settings and the magics. SQLAlchemy, numpy, pandas, httpx, openai, the store and the runtime (about 0.5 s
cold) are imported by the first command that needs them, or by the warming thread that starts once the
``%load_ext`` cell has finished. Each check runs in a new subprocess (an import already done in the test
process would hide one), and none is timed: the speed is ``python -m letta_nb.bench startup``'s to report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import letta_nb

ROOT = Path(letta_nb.__file__).resolve().parent.parent

# Each costs 0.05-0.3 s to import cold; none is needed to print %load_ext's line or to import letta_nb.
HEAVY = ("sqlalchemy", "numpy", "pandas", "matplotlib", "openai", "httpx", "tiktoken", "llama_index",
         "markdown_it", "ipywidgets", "opentelemetry.sdk", "aiosqlite", "letta_nb.client", "letta_nb.store.store",
         "letta_nb.runtime.runtime")

SHELL = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
HEAVY = {heavy!r}
def heavy():
    return [m for m in HEAVY if m in sys.modules]
"""


def run_child(body: str) -> dict[str, object]:
    """Run ``SHELL`` + ``body`` in a fresh interpreter (the test's LETTA_NB_HOME); its last line is JSON."""
    code = SHELL.format(heavy=HEAVY) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_letta_nb_imports_nothing_heavy_and_each_export_imports_on_first_use() -> None:
    got = run_child("""
        import letta_nb
        after_import = heavy()
        connect = letta_nb.connect  # a lazily exported name: its module is imported now, once
        print(json.dumps({"after_import": after_import, "client_loaded": "letta_nb.client" in sys.modules,
                          "same": connect is letta_nb.connect is sys.modules["letta_nb.client"].connect,
                          "bound": "connect" in vars(letta_nb)}))
    """)
    assert got == {"after_import": [], "client_loaded": True, "same": True, "bound": True}


def test_load_ext_imports_nothing_heavy_and_opens_no_store(letta_home: Path) -> None:
    got = run_child("""
        import os
        with capture_output() as cap:
            shell.run_line_magic("load_ext", "letta_nb")
        at_load = heavy()
        store_there_at_load = os.path.exists(os.path.join(os.environ["LETTA_NB_HOME"], "letta_nb.db"))
        with capture_output():
            frame = shell.run_line_magic("letta", "agents")
        from letta_nb.notebook import current_session
        location = current_session().client.store_location
        shell.run_line_magic("unload_ext", "letta_nb")
        print(json.dumps({"at_load": at_load, "store_there_at_load": store_there_at_load, "printed": cap.stdout,
                          "location": location, "rows": len(frame), "after_first": heavy()}))
    """)
    assert got["at_load"] == []
    assert got["store_there_at_load"] is False  # the first command opens (and here creates) the store
    assert got["location"] == str(letta_home / "letta_nb.db")
    assert f"letta_nb: store {got['location']};" in str(got["printed"])  # what load_ext said is where it opened
    assert got["rows"] == 0
    assert {"sqlalchemy", "pandas", "letta_nb.client"} <= set(got["after_first"])  # the work moved, not vanished


def test_the_load_ext_cell_warms_the_first_commands_imports_after_it_finishes(letta_home: Path) -> None:
    got = run_child("""
        import os
        import letta_nb.notebook as nb
        seen = {}
        # registered before the extension's hook, so it runs first: what the cell itself imported
        shell.events.register("post_execute", lambda: seen.setdefault("cell", heavy()))
        with capture_output():
            ok = shell.run_cell("%load_ext letta_nb").success
        warming = nb._warming
        warming.join(timeout=240)  # wait for the condition (imports done), not for a guessed time
        hooks_left = sum(1 for f in shell.events.callbacks["post_execute"] if f.__name__ == "hook")
        store = os.path.join(os.environ["LETTA_NB_HOME"], "letta_nb.db")
        warmed, store_after_warm = heavy(), os.path.exists(store)
        with capture_output():
            agents_ok = shell.run_cell("%letta agents").success
        thread_count_same = nb._warming is warming  # a later cell starts no second warming
        print(json.dumps({"ok": ok, "cell": seen["cell"], "alive": warming.is_alive(), "daemon": warming.daemon,
                          "hooks_left": hooks_left, "warmed": warmed, "store_after_warm": store_after_warm,
                          "agents_ok": agents_ok, "one_warming": thread_count_same, "store": os.path.exists(store)}))
    """)
    assert got["ok"] and got["agents_ok"]
    assert got["cell"] == []  # the %load_ext cell imported nothing heavy itself
    assert got["alive"] is False and got["daemon"] is True
    assert got["hooks_left"] == 0 and got["one_warming"] is True
    assert {"sqlalchemy", "numpy", "pandas", "httpx", "letta_nb.client", "letta_nb.store.store"} <= set(got["warmed"])
    assert got["store_after_warm"] is False  # warming imports; only a command opens the store
    assert got["store"] is True


def test_unloading_in_the_load_ext_cell_starts_no_warming(letta_home: Path) -> None:
    got = run_child("""
        import letta_nb.notebook as nb
        with capture_output():
            ok = shell.run_cell("%load_ext letta_nb\\n%unload_ext letta_nb").success
        hooks = [f for f in shell.events.callbacks["post_execute"] if f.__name__ == "hook"]
        print(json.dumps({"ok": ok, "warming": nb._warming is not None, "hooks": len(hooks), "heavy": heavy()}))
    """)
    assert got == {"ok": True, "warming": False, "hooks": 0, "heavy": []}
