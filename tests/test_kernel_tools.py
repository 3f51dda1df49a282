"""The agent that sees the kernel (issue 15): kernel tools, image parts, ``{In[n]}``/``{Out[n]}``/``{Err[n]}``
and ``%letta fix``.

Driven through a real kernel (nbclient) for the data question, and through the ``shell`` fixture (an
``InteractiveShell`` with letta_nb loaded) for the rest; the figure goes over real HTTP to the loopback server.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbclient import NotebookClient
from test_notebooks import this_python_kernel  # noqa: F401  (the fixture: a kernelspec running this Python)

from letta_nb.llm.tokens import message_tokens
from letta_nb.testing.loopback import LoopbackServer
from tests.agent_helpers import call

DATA = Path(__file__).resolve().parent / "data"
SALES = DATA / "sales.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(shell: InteractiveShell, source: str) -> Any:
    """Run a cell as the notebook would (numbered, kept in In/Out), its output captured."""
    with capture_output():
        return shell.run_cell(source, store_history=True)


def letta(shell: InteractiveShell, line: str, cell: str | None = None) -> Any:
    with capture_output():
        if cell is None:
            return shell.run_line_magic("letta", line)
        return shell.run_cell_magic("letta", line, cell)


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


@pytest.mark.parametrize(("csv", "column"),
                         [("tests/data/sample.csv", "daily_riders"), ("tests/data/sales.csv", "price")])
def test_a_data_question_in_a_real_kernel_is_answered_with_pandas_numbers(
        this_python_kernel: str, csv: str, column: str) -> None:  # noqa: F811
    cells = ["%load_ext letta_nb",
             "%letta create ada",
             "%letta tools kernel on",
             f"import pandas as pd\ndf = pd.read_csv({csv!r})",  # as the issue writes it, from the repository
             f"%%letta -o r\nHow many rows does df have, and what is the mean of {column}?",
             "import json\nprint(json.dumps({'text': r.text, 'tools': [m.name for m in r.messages if m.name]}))"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name=this_python_kernel,  # the store: conftest's $LETTA_NB_HOME
                   resources={"metadata": {"path": str(DATA.parent.parent)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    answer = json.loads(printed)
    assert {"list_variables", "describe_variable"} <= set(answer["tools"])
    df = pd.read_csv(DATA.parent.parent / csv)
    said = answer["text"]
    assert f"{len(df)} rows" in said
    (mean,) = [float(x) for x in re.findall(rf"{column}: mean (\S+?)\.?$", said)]
    assert mean == df[column].mean()  # exactly pandas' number, not a rounding of it


def test_list_and_describe_read_the_namespace_without_changing_it(shell: InteractiveShell) -> None:
    from letta_nb.notebook import kernel_tools

    run(shell, f"import numpy as np\nimport pandas as pd\ndf = pd.read_csv({str(SALES)!r})\n"
               "arr = np.arange(12.0).reshape(3, 4)\nnote = 'x' * 5000\n_hidden = 1\ndef helper(): pass")
    before = dict(shell.user_ns)
    listed = {v["name"]: v for v in json.loads(kernel_tools.list_variables())["variables"]}
    assert set(listed) == {"df", "arr", "note"}  # no modules (np, pd), functions, _names or In/Out
    assert listed["df"]["type"] == "DataFrame" and listed["df"]["shape"] == [50, 5] and listed["df"]["memory"] > 0
    assert listed["arr"]["memory"] == 96
    frame = json.loads(kernel_tools.describe_variable("df"))
    df = shell.user_ns["df"]
    assert frame["rows"] == 50 and frame["dtypes"]["price"] == "float64"
    assert frame["describe"]["quantity"]["max"] == df["quantity"].max()
    assert frame["head"].splitlines()[1].split()[1:] == [str(v) for v in df.iloc[0]]  # the first row, as shown
    array = json.loads(kernel_tools.describe_variable("arr"))
    assert array["dtype"] == "float64" and array["stats"] == {"min": 0.0, "max": 11.0, "mean": 5.5,
                                                             "std": float(shell.user_ns["arr"].std())}
    text = json.loads(kernel_tools.describe_variable("note"))
    assert len(text["repr"]) < 1100 and "truncated" in text["repr"]  # a long repr is cut, and says so
    with pytest.raises(ValueError, match=r"no variable 'dff'.*Did you mean df"):
        kernel_tools.describe_variable("dff")
    assert shell.user_ns.keys() == before.keys() and shell.user_ns["df"] is before["df"]


def test_read_cell_and_last_error_see_sources_results_and_tracebacks(shell: InteractiveShell) -> None:
    from letta_nb.notebook import kernel_tools

    assert kernel_tools.last_error() == "No error has been raised in this notebook yet."
    first = run(shell, "6 * 7").execution_count
    failing = run(shell, "numbers = [1, 2]\nnumbers[5]").execution_count
    run(shell, "ok = 1")  # a later cell that works: the error of the failing one is kept
    cell = kernel_tools.read_cell(first)
    assert f"In[{first}]:\n6 * 7" in cell and f"Out[{first}]:\n42" in cell
    error = kernel_tools.last_error()
    assert f"In[{failing}]:\nnumbers = [1, 2]\nnumbers[5]" in error
    assert "IndexError: list index out of range" in error and "interactiveshell.py" not in error
    assert "IndexError" in kernel_tools.read_cell(failing)
    with pytest.raises(ValueError, match=r"no cell In\[99\]"):
        kernel_tools.read_cell(99)


def test_run_python_runs_only_when_approved(shell: InteractiveShell) -> None:
    letta(shell, "create ann")
    letta(shell, "tools kernel on")
    assert "run_python" in letta(shell, "tools").query("attached").name.tolist()
    letta(shell, "ann -o r", call("run_python", code="made = 41 + 1\nprint('hello')\nmade * 2"))
    r = shell.user_ns["r"]
    assert r.stop_reason == "requires_approval" and [c.name for c in r.pending_approvals] == ["run_python"]
    before = dict(shell.user_ns)
    denied = letta(shell, f"approve {r.pending_approvals[0].id} --deny --reason no")
    assert "made" not in shell.user_ns and shell.user_ns.keys() == before.keys()
    assert denied.stop_reason != "requires_approval"

    letta(shell, "ann -o r2", call("run_python", code="made = 41 + 1\nprint('hello')\nmade * 2"))
    approved = letta(shell, f"approve {shell.user_ns['r2'].pending_approvals[0].id}")
    assert shell.user_ns["made"] == 42
    (result,) = [m for m in approved.messages if m.role == "tool" and m.name == "run_python"]
    assert result.status == "success" and result.content == "hello\n84"


def test_show_figure_sends_a_png_image_part_to_the_model(shell: InteractiveShell) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    import matplotlib.pyplot as plt

    from letta_nb.llm.images import image_marker

    with LoopbackServer() as srv:
        letta(shell, f"create viz --model openai/loopback-chat?base_url={srv.base_url}")
        letta(shell, "tools kernel on")
        run(shell, "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
                   "ax.plot([1, 3, 2, 5])\nax.set_title('sales')")
        srv.reply(tool_calls=[("show_figure", {})])
        srv.reply("A line that rises.")
        letta(shell, "viz -o r", "What does my plot show?")
        plt.close("all")
        sent = srv.requests[-1]["body"]["messages"]
    r = shell.user_ns["r"]
    assert r.text == "A line that rises."
    (tool,) = [m for m in sent if m.get("role") == "tool"]
    assert isinstance(tool["content"], str) and "[image]" in tool["content"]  # tool messages stay text
    images = [p for m in sent if m["role"] == "user" and isinstance(m["content"], list)
              for p in m["content"] if p["type"] == "image_url"]
    assert len(images) == 1 and sent.index(tool) < next(i for i, m in enumerate(sent) if isinstance(m["content"], list))
    url = images[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1], validate=True)
    assert png.startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50  # a real picture, read back by matplotlib
    # kept in recall memory: the stored message has the image, its text view says "[image]"
    (stored,) = [m for m in r.messages if m.role == "tool" and m.name == "show_figure"]
    assert "[image]" in stored.text and "base64" not in stored.text and image_marker(png) in (stored.content or "")


def test_show_figure_finds_the_figure_a_cell_drew_after_it_was_closed(shell: InteractiveShell) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from letta_nb.notebook import kernel_tools

    run(shell, "import matplotlib.pyplot as plt\nplt.close('all')")
    with pytest.raises(ValueError, match="no matplotlib figure to show"):
        kernel_tools.show_figure()
    run(shell, "plt.plot([3, 1, 2])")
    run(shell, "plt.close('all')")  # what Jupyter's inline backend does after showing it
    shown = kernel_tools.show_figure()
    assert shown.startswith("The current figure (") and "[[image data:image/png;base64,iVBOR" in shown


def test_image_parts_round_trip_and_cost_a_fixed_number_of_tokens() -> None:
    from letta_nb.llm.images import IMAGE_TOKENS, content_parts, image_marker, images_after_tools, placeholder_text

    png = PNG_SIGNATURE + b"\x00" * 3000
    text = f"Look:\n{image_marker(png)}\nthanks"
    assert placeholder_text(text) == "Look:\n[image]\nthanks"
    parts = content_parts(text)
    assert isinstance(parts, list) and [p["type"] for p in parts] == ["text", "image_url", "text"]
    assert content_parts("no image here") == "no image here"  # old rows read as they always did
    # one image costs IMAGE_TOKENS however large it is, not its base64 length
    assert message_tokens({"role": "user", "content": parts}) == 4 + 2 + IMAGE_TOKENS + 2
    assert message_tokens({"role": "user", "content": text}) == message_tokens({"role": "user", "content": parts})
    moved = images_after_tools([{"role": "assistant", "content": None, "tool_calls": []},
                                {"role": "tool", "tool_call_id": "a", "content": parts},
                                {"role": "tool", "tool_call_id": "b", "content": "2"},
                                {"role": "assistant", "content": "ok"}])
    assert [m["role"] for m in moved] == ["assistant", "tool", "tool", "user", "assistant"]
    assert moved[1]["content"] == "Look: [image] thanks" and moved[3]["content"][1]["type"] == "image_url"


def test_cell_references_in_a_letta_cell(shell: InteractiveShell) -> None:
    letta(shell, "create cy")
    source = run(shell, "total = 19 + 23\ntotal").execution_count
    failing = run(shell, "1 / 0").execution_count
    letta(shell, "-o r", f"Cell: {{In[{source}]}} gave {{Out[{source}]}}; then {{Err[{failing}]}}")
    sent = shell.user_ns["r"].messages[0].content
    assert f"Cell: total = 19 + 23\ntotal gave 42; then In[{failing}]:\n1 / 0" in sent
    assert "ZeroDivisionError: division by zero" in sent
    with pytest.raises(UsageError, match=rf"cell {source} raised no error"):
        letta(shell, "", f"{{Err[{source}]}}")
    with pytest.raises(UsageError, match=r"no cell In\[999\]"):
        letta(shell, "", "{In[999]}")


def test_letta_fix_sends_the_last_error_with_its_cell(shell: InteractiveShell) -> None:
    letta(shell, "create fixer")
    with pytest.raises(UsageError, match="No error to fix"):
        letta(shell, "fix")
    failing = run(shell, "values = {'a': 1}\nvalues['b']").execution_count
    run(shell, "fine = True")
    letta(shell, "fix")
    from letta_nb.notebook import current_session

    asked = [m for m in current_session().client.agents.messages.list("fixer") if m.role == "user"][-1].content
    assert f"cell In[{failing}] raised: KeyError: 'b'" in asked
    assert "values = {'a': 1}\nvalues['b']" in asked and "Traceback" in asked


def test_the_widget_shows_a_tool_image_as_a_placeholder() -> None:
    from letta_nb.llm.images import image_marker
    from letta_nb.notebook._widget_views import StepView

    step = StepView("call-1", "show_figure", "{}")
    step.finish("success", "the figure: " + image_marker(b"\x89PNG\r\n\x1a\n" + b"0" * 300), 3.0)
    assert step.result == "the figure: [image]"
