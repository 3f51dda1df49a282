"""The pieces a :class:`~letta_nb.notebook.widget.ChatWidget` is made of: message bubbles and tool-call steps.

A bubble is an ``Output`` widget holding one ``text/html`` output: the text rendered as Markdown in the
kernel with raw HTML disabled (notebook/_markdown.py), so code shows ``a < b && c > d`` verbatim and no
markup from a model runs; JupyterLab, Notebook 7 and VS Code draw it alike. A step
is a collapsed ``Accordion`` whose title carries tool, status and milliseconds and whose body holds the
arguments and the result; the model's reasoning is a collapsed ``Accordion`` too (titled ``💭 reasoning``),
so it is there to open and never mistaken for the reply. Both are updated by assigning traits, which
ipywidgets 8 syncs from any thread; each view throttles its own updates so a fast stream does not flood the
frontend.

A bubble's first output is its text and nothing else (what ``text/plain`` and the tests read); its role mark
(an initial in a circle, the speaker's name) and time are a second output that ``static/chat.css`` moves above
the text, and a reply's footer (tokens, latency, steps of its turn: :class:`ReplyStats`) a third, below it.
A frontend without that CSS shows the mark under the text: nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from letta_nb import _repr
from letta_nb.llm.images import placeholder_text
from letta_nb.notebook._markdown import to_html

__all__ = ["MessageView", "ReasoningView", "ReplyStats", "StepView", "TurnTally", "history_views",
           "last_user_message", "memory_html", "supersede_last_exchange"]

_MIN_INTERVAL_S = 0.05
_MARGIN = {"user": "2px 0 2px 15%", "assistant": "2px 15% 2px 0"}  # user on the right, agent on the left
# JupyterLab's theme colours (light and dark alike), with GitHub's as the fallback where they are not defined
_BORDER = {"user": "1px solid var(--jp-brand-color2, #54aeff)",
           "assistant": "1px solid var(--jp-border-color1, #d0d7de)"}


@dataclass(frozen=True)
class ReplyStats:
    """One turn as its reply's footer shows it: tokens (the turn's usage), wall time from send to stop, and
    model steps (one model call each, with its tool calls)."""

    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    steps: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def text(self) -> str:
        seconds = f"{self.latency_ms / 1000:.1f} s" if self.latency_ms >= 1000 else f"{self.latency_ms:.0f} ms"
        return (f"{self.tokens:,} tokens ({self.prompt_tokens:,} in, {self.completion_tokens:,} out) · {seconds} · "
                f"{self.steps} step{'' if self.steps == 1 else 's'}")


@dataclass
class TurnTally:
    """What a running turn has done so far, for its reply's footer: counted from its stream events."""

    start: float = field(default_factory=time.monotonic)
    steps: int = 0  # "step" events: one per model call committed
    usage: Any = None  # the stop event's usage (prompt and completion tokens of the whole turn)
    reply: MessageView | None = None  # the turn's last reply bubble, which carries the footer

    def stats(self) -> ReplyStats:
        return ReplyStats(getattr(self.usage, "prompt_tokens", 0), getattr(self.usage, "completion_tokens", 0),
                          (time.monotonic() - self.start) * 1000, self.steps)


def _output(html: str, text: str) -> dict[str, Any]:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": html, "text/plain": text}}


class MessageView:
    """One chat bubble whose text can grow (streamed tokens) and be finished with a note; ``name`` and ``at``
    (when it was said; now if not given) make its role mark and timestamp, ``stats`` a reply's footer."""

    def __init__(self, role: str, text: str = "", note: str = "", *, name: str = "",
                 at: dt.datetime | None = None):
        self.role, self.text, self.note = role, text, note
        self.name = name or ("You" if role == "user" else "agent")
        at = at or dt.datetime.now(dt.timezone.utc)
        self.at = (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)).astimezone()  # the kernel's local time
        self.stats: ReplyStats | None = None
        self.superseded = False
        self.widget = widgets.Output(layout=widgets.Layout(border=_BORDER.get(role, _BORDER["assistant"]),
                                                           margin=_MARGIN.get(role, ""), padding="0 8px"))
        self.widget.add_class("letta-msg")
        self.widget.add_class(f"letta-msg-{role}")
        self._last = 0.0
        self.render()

    @property
    def mark(self) -> str:
        """The role mark: the speaker's initial (``Y`` for you), shown in a circle."""
        return (self.name.strip()[:1] or "?").upper()

    @property
    def time(self) -> str:
        return self.at.strftime("%H:%M")

    @property
    def footer(self) -> str:
        """The reply's footer text ("" until its turn has ended, and on user bubbles)."""
        return self.stats.text if self.stats is not None else ""

    def append(self, text: str) -> None:
        self.text += text
        now = time.monotonic()
        if now - self._last >= _MIN_INTERVAL_S:
            self.render()

    def finish(self, note: str = "", stats: ReplyStats | None = None) -> None:
        self.note = note
        self.stats = stats if stats is not None else self.stats
        self.render()

    def supersede(self, note: str) -> None:
        """An edit or a retry follows this exchange: dim it and say so; it stays here and in recall memory."""
        self.superseded = True
        self.widget.add_class("letta-superseded")
        self.finish(note)

    def render(self) -> None:
        self._last = time.monotonic()
        body = to_html(self.text) if self.text.strip() else "<p>…</p>"
        if self.note:
            body += f"<p class='letta-note'><em>{_repr.esc(self.note)}</em></p>"
        meta = (f"<div class='letta-meta'><span class='letta-avatar'>{_repr.esc(self.mark)}</span>"
                f"<span class='letta-who'>{_repr.esc(self.name)}</span><time datetime='{self.at.isoformat()}' "
                f"title='{self.at.strftime('%Y-%m-%d %H:%M:%S %Z')}'>{self.time}</time></div>")
        outputs = [_output(f"<div class='letta-md'>{body}</div>", self.text),
                   _output(meta, f"{self.name} · {self.time}")]
        if self.stats is not None:
            outputs.append(_output(f"<div class='letta-footer'>{_repr.esc(self.footer)}</div>", self.footer))
        self.widget.outputs = tuple(outputs)


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
        self.status, self.result, self.ms = status, placeholder_text(result), ms  # a figure's PNG shows as [image]
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


def history_views(client: Any, agent: Any, limit: int) -> tuple[list[MessageView | StepView | ReasoningView],
                                                                list[Any]]:
    """The last ``limit`` messages of ``agent`` as views, oldest first, and the calls still waiting for
    approval (this kernel may have restarted since they were asked)."""
    from letta_nb.runtime import approvals
    from letta_nb.runtime.replies import content_is_reply

    views: list[MessageView | StepView | ReasoningView] = []
    steps: dict[str, StepView] = {}
    content_reply = content_is_reply(agent.agent_type, agent.tools)
    history = client.agents.messages.list(agent.id, limit=limit)
    for m in history:
        kind = m.message_type
        if m.role == "assistant" and m.tool_calls and m.content:  # the content beside a call, as it streamed
            views.append(MessageView("assistant", m.content, name=agent.name, at=m.created_at) if content_reply
                         else ReasoningView(m.content))
        if kind in ("user_message", "assistant_message"):
            note = f"{m.status}: partial answer" if m.status in ("cancelled", "error") else ""
            user = kind == "user_message"
            views.append(MessageView("user" if user else "assistant", m.text, note,
                                     name="" if user else agent.name, at=m.created_at))
        elif kind == "tool_call_message":
            for call in m.tool_calls:
                step = steps[call.id] = StepView(call.id, call.name, call.arguments)
                views.append(step)
        elif kind == "tool_return_message" and m.tool_call_id in steps:
            steps[m.tool_call_id].finish(m.status or "success", m.content or "", None)
    return views, approvals.pending(history)


def last_user_message(views: list[MessageView | StepView | ReasoningView]) -> MessageView | None:
    return next((v for v in reversed(views) if isinstance(v, MessageView) and v.role == "user"), None)


def supersede_last_exchange(views: list[MessageView | StepView | ReasoningView], note: str) -> None:
    """A retry or an edit follows the last exchange (the last user message and all after it): dim it, and
    say on its user message what became of it. Nothing is removed: it is still in recall memory."""
    last = last_user_message(views)
    if last is None:
        return
    for view in views[views.index(last):]:
        if isinstance(view, MessageView):
            view.supersede(note if view is last else view.note)
        else:
            view.widget.add_class("letta-superseded")
