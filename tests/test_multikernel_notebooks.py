"""Two real kernels (nbclient) share one agent on the default store, as two open notebooks would.

Each kernel runs a small notebook: ``%load_ext letta_nb`` (the store under LETTA_NB_HOME, which both kernels
inherit), a cell that waits until the other kernel is connected too, then a ``%%letta`` cell and a loop of
``%%letta`` sends to the same agent. Both notebooks execute at once (``async_execute`` under one
``asyncio.gather``). Afterwards the store holds every message once, each kernel's in its own order.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from test_notebooks import this_python_kernel  # noqa: F401  (the fixture: a kernelspec running this Python)

import letta_nb
from letta_nb.bench.multikernel import audit

MESSAGES = 12


def notebook(kernel: int, rendezvous: Path) -> nbformat.NotebookNode:
    # Both kernels connected before either sends, so the turns really overlap (a condition, not a sleep).
    rendezvous_cell = textwrap.dedent(f"""\
        import pathlib, time
        here = pathlib.Path({str(rendezvous)!r})
        (here / 'ready-{kernel}').touch()
        deadline = time.monotonic() + 120
        while not all((here / f'ready-{{k}}').exists() for k in (0, 1)):
            assert time.monotonic() < deadline, 'the other kernel never connected'
            time.sleep(0.005)""")
    loop_cell = textwrap.dedent(f"""\
        for i in range(1, {MESSAGES}):
            get_ipython().run_cell_magic('letta', 'shared -o r', f'k{kernel}-m{{i}}')
            assert r.text, i""")
    cells = ["%load_ext letta_nb", rendezvous_cell, f"%%letta shared -o first\nk{kernel}-m0", loop_cell,
             "%letta sql SELECT count(*) AS user_messages FROM messages WHERE role = 'user'"]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def test_two_kernels_send_to_one_agent_at_once_and_recall_has_every_message_once_in_order(
        this_python_kernel: str, tmp_path: Path, letta_home: Path) -> None:  # noqa: F811
    letta_home.mkdir()
    with letta_nb.connect(letta_home / "letta_nb.db") as client:
        client.agents.create("shared", model="offline?latency_ms=5")
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    books = [notebook(k, rendezvous) for k in (0, 1)]

    async def both() -> None:
        runs = [NotebookClient(nb, timeout=120, kernel_name=this_python_kernel,
                               resources={"metadata": {"path": str(tmp_path)}}).async_execute() for nb in books]
        for outcome in await asyncio.gather(*runs, return_exceptions=True):  # both run to the end, then
            if isinstance(outcome, BaseException):  # a cell that raised fails the test, with its traceback
                raise outcome

    asyncio.run(both())
    for nb in books:
        assert "letta_nb: store" in nb.cells[0].outputs[0]["text"] and str(letta_home) in nb.cells[0].outputs[0]["text"]
    report = audit(str(letta_home / "letta_nb.db"),
                   {"shared": {k: [f"k{k}-m{i}" for i in range(MESSAGES)] for k in (0, 1)}})
    assert (report["lost"], report["duplicated"], report["order_violations"]) == (0, 0, 0), report
    assert (report["seq_errors"], report["half_steps"], report["integrity"]) == ([], [], "ok"), report
    with letta_nb.connect(letta_home / "letta_nb.db") as client:  # recall, as a third kernel would read it
        said = [m.content for m in client.agents.messages.list("shared") if m.role == "user"]
    assert sorted(said) == sorted(f"k{k}-m{i}" for k in (0, 1) for i in range(MESSAGES))
    for k in (0, 1):
        assert [s for s in said if s.startswith(f"k{k}-")] == [f"k{k}-m{i}" for i in range(MESSAGES)]
