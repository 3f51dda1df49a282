"""Rich display of the API's objects (HTML and Markdown for Jupyter), and the ``bench startup`` report.

The reprs are plain strings built without IPython; what matters is that they show the content and never
let user or model text through as markup.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import letta_nb

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
    for key in ("load_ext_s", "ipython_import_s", "first_letta_s", "load_ext_vs_ipython_import"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["heavy_imports_at_load"] == "none"  # pandas, matplotlib, llama_index, ipywidgets stay lazy
    assert set(result["goals"]) == {"load_ext <= 0.5 s", "no pandas/matplotlib/llama_index/ipywidgets at load"}
