"""Approve / Deny for a tool call that waits for a person (runtime/approvals.py), in the chat widget and in
``%%letta`` output.

:class:`ApprovalView` is one waiting call: its tool and arguments (pretty JSON), a reason box, and Approve /
Deny buttons; a click hands ``(call_id, approve, reason)`` to whoever owns the view (the chat widget runs the
answering turn in its worker thread and streams it like any turn) and disables the buttons, so one click is
one answer. :class:`ApprovalBox` is what ``%%letta`` displays under a reply that stopped for approval: the
same views, answering through the client in a background thread (the kernel stays free) and showing the
reply after. Where widgets do not render (a terminal, nbconvert, a static notebook viewer) the box's plain
text is the command to type instead (:func:`fallback_text`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from letta_nb import _repr
from letta_nb.errors import LettaNBError
from letta_nb.notebook._live_reply import fallback_text

__all__ = ["ApprovalBox", "ApprovalView"]

Answer = Callable[[str, bool, "str | None"], Any]


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


class ApprovalView:
    """One waiting call with its arguments and Approve / Deny buttons; ``on_answer(call_id, approve, reason)``."""

    def __init__(self, call_id: str, name: str, arguments: str, on_answer: Answer):
        self.call_id, self.name, self.arguments = call_id, name, arguments
        self.answer: bool | None = None
        self._on_answer = on_answer
        title = widgets.HTML(f"<b>⏸ {_repr.esc(name)}</b> <span style='color:#6e7781'>waits for your approval"
                             f"</span><pre class='letta-approval-args' style='margin:2px 0;white-space:pre-wrap'>"
                             f"{_repr.esc(_pretty(arguments))}</pre>")
        self.reason = widgets.Text(placeholder="reason (optional; the model reads it if you deny)",
                                   layout=widgets.Layout(flex="1"))
        self.reason.add_class("letta-approval-reason")
        self.approve_button = widgets.Button(description="Approve", button_style="success", icon="check")
        self.approve_button.add_class("letta-approve")
        self.deny_button = widgets.Button(description="Deny", button_style="danger", icon="times")
        self.deny_button.add_class("letta-deny")
        self.outcome = widgets.HTML()
        self.outcome.add_class("letta-approval-outcome")
        self.approve_button.on_click(lambda _: self.click(True))
        self.deny_button.on_click(lambda _: self.click(False))
        self.widget = widgets.VBox(
            [title, widgets.HBox([self.reason, self.approve_button, self.deny_button]), self.outcome],
            # flex "0 0 auto": in the scrolling chat log a box must keep its height, not shrink to a line
            layout=widgets.Layout(border="1px solid #bf8700", padding="4px 8px", margin="2px 15% 2px 0",
                                  flex="0 0 auto"))
        self.widget.add_class("letta-approval")

    def click(self, approve: bool) -> None:
        """What the buttons do: answer once (a second click does nothing)."""
        if self.answer is not None:
            return
        self.answer = approve
        self.approve_button.disabled = self.deny_button.disabled = self.reason.disabled = True
        self.outcome.value = "<span style='color:#6e7781'>approved: running…</span>" if approve else \
            "<span style='color:#6e7781'>denied</span>"
        if self._on_answer(self.call_id, approve, self.reason.value.strip() or None) is False:  # busy: not taken
            self.answer = None
            self.approve_button.disabled = self.deny_button.disabled = self.reason.disabled = False
            self.outcome.value = "<span style='color:#6e7781'>the agent is busy; try again when it is done</span>"

    def done(self, status: str, content: str) -> None:
        """The call's answer landed: its result (approved) or the denial the model read."""
        verb = "answered" if self.answer is None else ("approved" if self.answer else "denied")  # None: elsewhere
        self.approve_button.disabled = self.deny_button.disabled = self.reason.disabled = True
        self.outcome.value = (f"<span style='color:#6e7781'>{verb} → {_repr.esc(status)}: "
                              f"{_repr.esc(_repr.short(content, 300))}</span>")

    def failed(self, message: str) -> None:
        """The answer was refused (e.g. another kernel answered first): say so, buttons stay off."""
        self.outcome.value = f"<span style='color:#cf222e'>{_repr.esc(message)}</span>"


class ApprovalBox(widgets.VBox):  # type: ignore[misc]  # ipywidgets has no type information
    """``%%letta``'s Approve / Deny for the calls a reply stopped on; answers through ``client``."""

    def __init__(self, client: Any, agent: str, calls: Sequence[Any], **kwargs: Any):
        self.client, self.agent_name = client, agent
        self.views: dict[str, ApprovalView] = {}
        self.result = widgets.HTML()
        self.result.add_class("letta-approval-result")
        self._worker: threading.Thread | None = None
        self._fallback = fallback_text(agent, calls)
        super().__init__([], **kwargs)
        self.add_class("letta-approval-box")
        self._show(calls)

    def _show(self, calls: Sequence[Any]) -> None:
        for c in calls:
            self.views[c.id] = ApprovalView(c.id, c.name, c.arguments, self._answer)
        self.children = (*[v.widget for v in self.views.values()], self.result)

    def _answer(self, call_id: str, approve: bool, reason: str | None) -> None:
        self._worker = threading.Thread(target=self._run, args=(call_id, approve, reason), daemon=True,
                                        name="letta_nb-approval")
        self._worker.start()

    def _run(self, call_id: str, approve: bool, reason: str | None) -> None:
        try:
            response = self.client.agents.messages.approve(self.agent_name, call_id, approve, reason=reason)
        except LettaNBError as e:
            self.views[call_id].failed(str(e))
            return
        lines = [f"⚙ {m.name} → {m.status}: {_repr.short(m.content or '', 200)}" for m in response.messages
                 if m.role == "tool" and m.name != "send_message"]
        text = "\n".join([*lines, response.text])
        self.result.value = f"<div style='white-space:pre-wrap'>{_repr.esc(text)}</div>"
        if response.pending_approvals:  # the turn went on and stopped on another call
            self._show(response.pending_approvals)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the answer's turn (if one was started) has finished."""
        if self._worker is not None:
            self._worker.join(timeout)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self._fallback  # what a frontend without widgets shows: the command to type
        return bundle
