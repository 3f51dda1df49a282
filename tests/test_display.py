"""Rich display of the API's objects (HTML and Markdown for Jupyter), and the ``bench startup`` report.

The reprs are plain strings built without IPython; what matters is that they show the content and never
let user or model text through as markup.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

import letta_nb
from tests import test_magics

EVIL = "<script>alert('x')</script>"


def test_every_object_renders_html_and_markdown_with_text_escaped(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam", memory_blocks=[{"label": "human", "value": f"Name: Ada {EVIL}"}])
    response = client.agents.messages.create("sam", f"Remember that {EVIL} is not code.")
    passage = client.agents.passages.search("sam", "code", top_k=1)[0]
    block = client.agents.blocks.retrieve("sam", "human")
    objects = {"agent": agent, "response": response, "message": response.messages[0], "block": block,
               "passage": passage}
    for name, obj in objects.items():
        html, md = obj._repr_html_(), obj._repr_markdown_()
        assert "<script>" not in html and "<script>" not in md, name
        assert "&lt;script&gt;" in html, name
    assert "<b>Agent sam</b>" in agent._repr_html_() and "Name: Ada" in agent._repr_html_()
    assert "user_message #" in response._repr_html_() and "step(s)" in response._repr_html_()
    assert f"{len(response.steps)} step(s) · stop end_turn" in response._repr_html_()
    assert "score" in passage._repr_html_() and passage.score is not None
    assert "<b>human</b>" in block._repr_html_() and f"{block.chars}/{block.limit} chars" in block._repr_html_()
    assert response._repr_markdown_().startswith("Got it")


def test_repr_html_does_not_need_ipython() -> None:
    code = ("import sys, letta_nb; c = letta_nb.connect(':memory:'); a = c.agents.create('x'); a._repr_html_(); "
            "c.close(); print('IPython' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_bench_startup_reports_its_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "letta_nb.bench", "startup", "--quick", "--json"],
                         capture_output=True, text=True, check=True, timeout=240).stdout
    result = json.loads(out)["startup"]
    for key in ("load_ext_s", "ipython_import_s", "first_letta_s", "load_ext_plus_first_s", "import_letta_nb_s",
                "load_ext_vs_ipython_import"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["heavy_imports_at_load"] == "none"  # SQLAlchemy, numpy, pandas, the store ... stay lazy
    assert set(result["goals"]) == {"load_ext <= 2x import IPython", "no heavy module imported by %load_ext"}


# ---- issue 15: %%letta output, %letta stats steps, %letta? -------------------------------------------------

CODE_REPLY = "Use `a < b && c > d`, or:\n\n```python\nif a < b && c > d:\n    pass\n```\n\nso a < b && c > d holds."


def test_letta_cell_output_shows_code_verbatim_and_no_model_html() -> None:
    from letta_nb.notebook._live_reply import LiveReply

    live = LiveReply("sam")
    live.text = CODE_REPLY + " <img src=x onerror=alert(1)><script>alert(2)</script>"
    live.status = "done"
    bundle = live.bundle()
    html = bundle["text/html"]  # what Jupyter shows (it prefers HTML to Markdown)
    assert "<code>a &lt; b &amp;&amp; c &gt; d</code>" in html and "a &lt; b &amp;&amp; c &gt; d holds" in html
    assert '<code class="language-python">' in html and "&amp;lt;" not in html
    assert "<img" not in html and "<script" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    md = bundle["text/markdown"]  # for frontends that ask for Markdown: code left verbatim, tags escaped outside
    assert "`a < b && c > d`" in md and "if a < b && c > d:" in md and "so a &lt; b &amp;&amp; c > d holds" in md
    assert "<img" not in md and "<script" not in md


def test_markdown_reprs_keep_code_verbatim(client: letta_nb.Client) -> None:
    client.agents.create("sam", memory_blocks=[{"label": "human", "value": "Knows `x < y && z`. " + EVIL}])
    md = client.agents.blocks.retrieve("sam", "human")._repr_markdown_()
    assert "`x < y && z`" in md and "<script>" not in md and "&lt;script>" in md


def test_memory_and_tool_text_wrap_at_words() -> None:
    from letta_nb import _repr

    block = type("B", (), {"label": "human", "value": "It matters.", "chars": 11, "limit": 100, "read_only": False})
    assert "word-break:normal;overflow-wrap:anywhere" in _repr.block_html(block)


# the %letta magics in a real InteractiveShell (the ``shell`` fixture of tests/conftest.py)
def test_stats_steps_is_readable(shell: Any) -> None:
    test_magics.letta(shell, "create sam")
    test_magics.cell(shell, "", "My name is Ada.")
    steps = test_magics.letta(shell, "stats steps")
    assert list(steps.columns[:5]) == ["total_ms", "llm_ms", "tools_ms", "db_ms", "ttft_ms"]  # the timings first
    assert list(steps["agent"]) == ["sam", "sam"] and steps["step"].str.len().max() == 8
    assert str(steps["started"].dt.tz) == str(datetime.now().astimezone().tzinfo)  # local time, not UTC ns
    html = steps._repr_html_()
    assert "<style" in html and "agent-" not in html and "step-" not in html  # styled, no long ids
    assert type(steps[steps.total_ms > 0]).__name__ == "DataFrame"  # derived frames are plain DataFrames


def test_help_has_no_rest_markers_and_notices_no_doubled_apostrophe(shell: Any) -> None:
    from letta_nb.notebook.magics import LettaChatMagics, LettaCommandMagics

    for doc in (LettaCommandMagics.letta.__doc__, LettaChatMagics.letta.__doc__):
        assert doc and "%letta" in doc and not any(line.strip() == "::" for line in doc.splitlines())
    test_magics.letta(shell, "create sam")
    notice = repr(test_magics.letta(shell, "archival insert 'The sky is blue.'"))
    assert "''" not in notice and "'sam'" in notice
