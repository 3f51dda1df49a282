"""A reply that grows in the output area while ``%%letta`` streams it.

The stream runs in the cell's own thread (a kernel interrupt lands there, so Ctrl-C stops the turn); each
event updates one display handle, throttled so a fast model does not flood the frontend with messages.
Tool calls appear as compact lines (``⚙ core_memory_append(label='human', …) → success · 0.4 ms``) above
the reply text. The last update always happens, whatever the throttle, so the final state is complete.
A call that waits for approval ends the reply with the command to answer it (the text fallback of the
Approve / Deny box ``%%letta`` shows under it, notebook/_approval_view.py).
The reply shows as it streams whether it came through ``send_message`` or as plain content; the model's
reasoning is shown only on request (``%%letta --reasoning``), dimmed, above the tool lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from letta_nb import _repr
from letta_nb.llm.base import ToolCall

__all__ = ["FORMATS", "LiveReply", "call_line", "fallback_text"]

FORMATS = ("md", "text", "json")
_MIN_INTERVAL_S = 0.05


def call_line(name: str, arguments: str, width: int = 80) -> str:
    """``name(k='v', …)`` from JSON arguments, shortened to ``width`` characters."""
    try:
        parsed = json.loads(arguments) if arguments else {}
        inner = ", ".join(f"{k}={v!r}" for k, v in parsed.items()) if isinstance(parsed, dict) else arguments
    except ValueError:
        inner = arguments
    return f"{name}({_repr.short(inner, width)})"


def fallback_text(agent: str, calls: Sequence[ToolCall]) -> str:
    """What to type to answer ``calls`` that wait for approval, where no Approve / Deny box renders."""
    lines = []
    for c in calls:
        lines.append(f"⏸ {c.name}({_repr.short(c.arguments, 200)}) waits for your approval. Type:\n"
                     f"    %letta approve {c.id} --agent {agent}\n"
                     f"    %letta approve {c.id} --agent {agent} --deny --reason \"why not\"")
    return "\n".join(lines)


class LiveReply:
    """Accumulates one turn's events and renders them as a mime bundle in the requested format."""

    def __init__(self, agent: str, fmt: str = "md", reasoning: bool = False):
        self.agent, self.fmt, self.show_reasoning = agent, fmt, reasoning
        self.text = ""
        self.reasoning = ""
        self.calls: dict[str, list[str]] = {}  # call_id -> [line, outcome]
        self.status = "streaming"
        self.error: str | None = None
        self.approvals: list[Any] = []  # ApprovalRequestEvents: calls waiting for a person
        self._last = 0.0

    def feed(self, event: Any) -> None:
        kind = event.message_type
        if kind == "assistant_message":
            self.text += event.text
        elif kind == "reasoning_message":
            self.reasoning += event.text
        elif kind == "tool_call_message":
            self.calls[event.call_id] = [call_line(event.name, event.arguments), "…"]
        elif kind == "tool_return_message":
            line = self.calls.setdefault(event.call_id, [f"{event.name}(…)", ""])
            line[1] = f"→ {event.status} · {event.duration_ms:.1f} ms"
        elif kind == "approval_request_message":
            self.approvals.append(event)
            line = self.calls.setdefault(event.call_id, [call_line(event.name, event.arguments), ""])
            line[1] = "⏸ waits for your approval"
        elif kind == "stop_reason" and event.stop_reason != "end_turn":
            self.status = event.stop_reason

    def due(self) -> bool:
        """True when enough time passed since the last render to show another."""
        now = time.monotonic()
        if now - self._last >= _MIN_INTERVAL_S:
            self._last = now
            return True
        return False

    def _tool_lines(self) -> list[str]:
        return [f"⚙ {line} {outcome}".rstrip() for line, outcome in self.calls.values()]

    def _footer(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.approvals and self.status == "requires_approval":
            return fallback_text(self.agent, [ToolCall(e.call_id, e.name, e.arguments) for e in self.approvals])
        if self.status not in ("streaming", "done"):
            return f"[{self.status}: the partial answer above was kept]"
        return ""

    def _thoughts(self) -> str:
        return self.reasoning.strip() if self.show_reasoning else ""

    def plain(self) -> str:
        thoughts = [f"💭 {self._thoughts()}"] if self._thoughts() else []
        parts = thoughts + self._tool_lines() + [self.text or ("…" if self.status == "streaming" else "")]
        footer = self._footer()
        return "\n".join(p for p in [*parts, footer] if p)

    def _head_html(self) -> str:
        """Reasoning (on request) and tool lines, as HTML: the same above the Markdown and the HTML reply."""
        tools = "".join(f"<div style='color:#8250df;font-family:monospace;font-size:85%;{_repr.WRAP}'>"
                        f"{_repr.esc(t)}</div>" for t in self._tool_lines())
        thoughts = (f"<div class='letta-reasoning' style='color:#6e7781;font-style:italic;{_repr.WRAP}'>"
                    f"💭 {_repr.esc(self._thoughts())}</div>" if self._thoughts() else "")
        return thoughts + tools

    def markdown(self) -> str:
        body = (_repr.md_text(self.text).replace("\n", "  \n") if self.text
                else ("*…*" if self.status == "streaming" else ""))
        footer = self._footer()
        footer = f"\n\n<span style='color:#cf222e'>{_repr.esc(footer)}</span>" if footer else ""
        head = self._head_html()
        return f"{head}\n\n{body}{footer}" if head else f"{body}{footer}"

    def html(self) -> str:
        """What Jupyter shows for ``--format md``: the reply's Markdown rendered in the kernel with raw HTML off
        (notebook/_markdown.py), so code keeps its ``<``, ``>`` and ``&`` and no markup from the model runs.
        ``text/markdown`` stays in the bundle for frontends that ask for it."""
        from letta_nb.notebook._markdown import to_html

        body = to_html(self.text) if self.text else ("<p><em>…</em></p>" if self.status == "streaming" else "")
        footer = self._footer()
        footer = f"<div style='color:#cf222e;{_repr.WRAP}'>{_repr.esc(footer)}</div>" if footer else ""
        return f"<div class='letta-reply'>{self._head_html()}{body}{footer}</div>"

    def bundle(self, response: Any = None) -> dict[str, Any]:
        data: dict[str, Any] = {"text/plain": self.plain()}
        if self.fmt == "md":
            data["text/html"] = self.html()
            data["text/markdown"] = self.markdown()
        elif self.fmt == "json" and self.status != "streaming":
            data["application/json"] = self.as_json(response)
        return data

    def as_json(self, response: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {"agent": self.agent, "text": self.text, "status": self.status,
                               "tool_calls": [{"call": c[0], "outcome": c[1]} for c in self.calls.values()]}
        if self.show_reasoning:
            out["reasoning"] = self.reasoning
        if self.error:
            out["error"] = self.error
        if response is not None:
            out["usage"] = {"prompt_tokens": response.usage.prompt_tokens,
                            "completion_tokens": response.usage.completion_tokens}
            out["timings_ms"] = response.timings
        return out
