"""The ChatWidget's header: which agent (a picker of the store's agents), its model, and how full its context
window is (a small gauge).

The picker is an ipywidgets ``Dropdown`` whose ``value`` is an agent name; the widget observes it and, between
turns, switches to that agent (history and memory reloaded; notebook/widget.py). The gauge reads
``client.agents.context(agent)`` (runtime/services/context.py: the same count the agent loop budgets and evicts
by) once when the widget opens, after each turn and on a switch: never per token. A read costs ~4 ms, but it
also lists the agent's archival passages to count them (~190 ms at 5,000 passages, measured here), so after a
turn the widget reads it once the input is free again. The header is composed, not subclassed, so the checker
sees its types.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from letta_nb import _repr
from letta_nb.errors import LettaNBError

__all__ = ["ChatHeader"]


class ChatHeader:
    """``widget`` is the header row; ``picker`` the agent Dropdown; ``gauge`` the context gauge's HTML."""

    def __init__(self, client: Any, agent: Any):
        self.client = client
        self.picker = widgets.Dropdown(options=[agent.name], value=agent.name, description="",
                                       layout=widgets.Layout(width="auto", max_width="40%"))
        self.picker.add_class("letta-agent-picker")
        self.model = widgets.HTML()
        self.model.add_class("letta-model")
        self.gauge = widgets.HTML()
        self.gauge.add_class("letta-gauge")
        self.used, self.window = 0, 0  # tokens in the context window, and its size (0: not read yet)
        self.widget = widgets.HBox([self.picker, self.model, self.gauge],
                                   layout=widgets.Layout(align_items="center", width="100%"))
        self.widget.add_class("letta-header")
        self.show_agent(agent)

    def show_agent(self, agent: Any) -> None:
        """Show ``agent`` as the chosen one, the store's agents as the choices."""
        self.refresh_agents(current=agent.name)
        self.model.value = f"<span class='letta-model-name'>model {_repr.esc(agent.model)}</span>"

    def refresh_agents(self, current: str | None = None) -> None:
        """Re-read the store's agent names (an agent made since the widget opened becomes a choice)."""
        current = current if current is not None else str(self.picker.value)
        try:
            names = [a.name for a in self.client.agents.list()]
        except LettaNBError:
            names = []
        if current not in names:
            names.append(current)
        if list(self.picker.options) != names:
            # options first (keeping the value valid), then the value: no spurious change of agent in between
            with self.picker.hold_trait_notifications():
                self.picker.options = names
                self.picker.value = current
        elif self.picker.value != current:
            self.picker.value = current

    def refresh_context(self, agent_id: str) -> None:
        """Re-read how full the agent's context window is; a failed read leaves the gauge empty, not an error."""
        try:
            cw = self.client.agents.context(agent_id)
        except LettaNBError:
            self.used, self.window, self.gauge.value = 0, 0, ""
            return
        self.used, self.window = cw.total, cw.context_window
        share = cw.used
        level = "high" if share >= 0.75 else "mid" if share >= 0.5 else "low"
        self.gauge.value = (
            f"<div class='letta-gauge-box letta-gauge-{level}' title='context window: {cw.total:,} of "
            f"{cw.context_window:,} tokens ({share:.0%}); {cw.messages_in_window} messages in it, "
            f"{cw.recall_messages} in recall'><span class='letta-gauge-bar'><span style='width:{min(share, 1):.1%}'>"
            f"</span></span><span class='letta-gauge-text'>{_short(cw.total)} / {_short(cw.context_window)} tokens"
            f"</span></div>")


def _short(n: int) -> str:
    """1234 -> 1.2k, 128000 -> 128k: a gauge has room for a few characters."""
    if n < 1000:
        return str(n)
    if n < 10_000:
        return f"{n / 1000:.1f}k"
    return f"{n // 1000}k"
