"""The ChatWidget's core-memory panel, and how it follows changes made anywhere.

Memory edited anywhere in this kernel (another widget, ``%letta memory set``, a ``%%letta`` turn) or, with
Redis, in another kernel comes as a change notice on the runtime's loop (runtime/leases.py). The panel never
reads the store there: it hands the work to a thread of its own, and notices that come while a refresh runs
are folded into one more refresh, so a burst of edits costs at most two reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from letta_nb.errors import LettaNBError, RuntimeClosedError
from letta_nb.notebook._widget_views import memory_html

__all__ = ["MemoryPanel"]


class MemoryPanel:
    """``widget`` shows the blocks of ``agent()`` (read at each refresh: the chat may switch agents);
    ``on_error(text)`` is told what a failed read said."""

    def __init__(self, client: Any, agent: Callable[[], Any], on_error: Callable[[str], None]):
        self.client, self._agent, self._on_error = client, agent, on_error
        self.widget = widgets.HTML(layout=widgets.Layout(width="32%", padding="0 0 0 8px"))
        self.widget.add_class("letta-memory")
        self._lock = threading.Lock()
        self._dirty = self._refreshing = False

    def refresh(self) -> None:
        """Re-read the agent's blocks now, on the calling thread."""
        agent = self._agent()
        try:
            blocks = self.client.agents.blocks.list(agent.id)
        except RuntimeClosedError:
            return  # the client closed while a change notice was on its way: nothing left to show
        except LettaNBError as e:
            self._on_error(str(e))
            return
        self.widget.value = memory_html(agent.name, blocks)

    def changed(self) -> None:
        """The agent changed somewhere: refresh on a thread of ours (this is called on the runtime's loop)."""
        with self._lock:
            self._dirty = True
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh_while_dirty, name="letta_nb-chat-memory", daemon=True).start()

    def _refresh_while_dirty(self) -> None:
        while True:
            with self._lock:
                if not self._dirty:
                    self._refreshing = False
                    return
                self._dirty = False
            self.refresh()
