"""The pieces a :class:`~letta_nb.notebook.widget.ChatWidget` is made of: message bubbles and tool-call steps.

A bubble is an ``Output`` widget holding one ``text/html`` output: the text rendered as Markdown in the
kernel with raw HTML disabled (notebook/_markdown.py), so code shows ``a < b && c > d`` verbatim and no
markup from a model runs; JupyterLab, Notebook 7 and VS Code draw it alike. A step
is a collapsed ``Accordion`` whose title carries tool, status and milliseconds and whose body holds the
arguments and the result; the model's reasoning is a collapsed ``Accordion`` too (titled ``💭 reasoning``),
so it is there to open and never mistaken for the reply. Both are updated by assigning traits, which
ipywidgets 8 syncs from any thread; each view throttles its own updates so a fast stream does not flood the
frontend.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ipywidgets as widgets

from letta_nb import _repr
from letta_nb.notebook._markdown import to_html

__all__ = ["MessageView", "ReasoningView", "StepView", "memory_html"]

_MIN_INTERVAL_S = 0.05
_MARGIN = {"user": "2px 0 2px 15%", "assistant": "2px 15% 2px 0"}  # user on the right, agent on the left
_BORDER = {"user": "1px solid #54aeff", "assistant": "1px solid #d0d7de"}


class MessageView:
    """One chat bubble whose text can grow (streamed tokens) and be finished with a note."""

    def __init__(self, role: str, text: str = "", note: str = ""):
        self.role, self.text, self.note = role, text, note
        self.widget = widgets.Output(layout=widgets.Layout(border=_BORDER.get(role, _BORDER["assistant"]),
                                                           margin=_MARGIN.get(role, ""), padding="0 8px"))
        self.widget.add_class("letta-msg")
        self.widget.add_class(f"letta-msg-{role}")
        self._last = 0.0
        self.render()

    def append(self, text: str) -> None:
        self.text += text
        now = time.monotonic()
        if now - self._last >= _MIN_INTERVAL_S:
            self.render()

    def finish(self, note: str = "") -> None:
        self.note = note
        self.render()

    def render(self) -> None:
        self._last = time.monotonic()
        body = to_html(self.text) if self.text.strip() else "<p>…</p>"
        if self.note:
            body += f"<p class='letta-note'><em>{_repr.esc(self.note)}</em></p>"
        self.widget.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"text/html": f"<div class='letta-md'>{body}</div>",
                                         "text/plain": self.text}},)


class StepView:
    """One tool call: collapsed by default, titled ``⚙ name · status · ms``; arguments and result inside."""

    def __init__(self, call_id: str, name: str, arguments: str):
        self.call_id, self.name, self.arguments = call_id, name, arguments
        self.status, self.result = "running", ""
        self.ms: float | None = None
        self.body = widgets.HTML()
        self.widget = widgets.Accordion(children=[self.body], selected_index=None)
        self.widget.add_class("letta-step")
        self.render()

    def finish(self, status: str, result: str, ms: float | None) -> None:
        self.status, self.result, self.ms = status, result, ms
        self.render()

    @property
    def title(self) -> str:
        ms = f" · {self.ms:.1f} ms" if self.ms is not None else ""
        return f"⚙ {self.name} · {self.status}{ms}"

    def render(self) -> None:
        try:
            args = json.dumps(json.loads(self.arguments), indent=2, ensure_ascii=False)
        except ValueError:
            args = self.arguments
        color = {"success": "#2da44e", "running": "#6e7781"}.get(self.status, "#cf222e")
        result = _repr.esc(_repr.short(self.result, 4000)) if self.result else "<i>(waiting)</i>"
        self.body.value = (f"<div style='font-size:90%'><b>arguments</b><pre style='{_repr.WRAP}'>"
                           f"{_repr.esc(args)}</pre><b>result</b> <span style='color:{color}'>{_repr.esc(self.status)}"
                           f"</span><pre style='{_repr.WRAP}'>{result}</pre></div>")
        self.widget.titles = (self.title,)


class ReasoningView:
    """The model's reasoning in one step: collapsed by default, growing while it streams."""

    role = "reasoning"

    def __init__(self, text: str = ""):
        self.text = text
        self.body = widgets.HTML()
        self.body.add_class("letta-reasoning-body")
        self.widget = widgets.Accordion(children=[self.body], selected_index=None)
        self.widget.add_class("letta-reasoning")
        self._last = 0.0
        self.render()

    def append(self, text: str) -> None:
        self.text += text
        if time.monotonic() - self._last >= _MIN_INTERVAL_S:
            self.render()

    def render(self) -> None:
        self._last = time.monotonic()
        self.body.value = (f"<pre style='{_repr.WRAP};color:var(--jp-ui-font-color2,#57606a);font-size:90%'>"
                           f"{_repr.esc(self.text)}</pre>")
        self.widget.titles = ("💭 reasoning",)


def memory_html(agent_name: str, blocks: list[Any]) -> str:
    cards = "".join(_repr.block_html(b) for b in blocks)
    return f"<div style='font-size:90%'><b>Core memory · {_repr.esc(agent_name)}</b>{cards}</div>"
