"""The one piece of the ChatWidget that runs in the browser: typing indicator, Enter to send, autoscroll,
a Copy button on code blocks, and message times in the reader's clock.

ipywidgets' built-in controls cannot do these: a ``Textarea`` has no key events (Enter and Shift+Enter
both add a newline) and a ``VBox`` cannot scroll itself. So a small `anywidget
<https://anywidget.dev>`_ view (``static/chat.js``, an ES module with no build step; JupyterLab,
Notebook 7 and VS Code load it alike) sits inside the chat box and attaches to its conversation and input.
Its state is synced traitlets, so Python drives and reads it as the browser does: ``thinking`` shows the
indicator, ``following`` says whether the conversation follows new messages (False once the user has
scrolled up, True again at the bottom), and a press of Enter arrives as a ``submit`` message that calls
the handler given to :meth:`ChatFrontend.on_submit`. The input is marked ``data-lm-suppress-shortcuts``: in
Notebook 7, which reads keys before any handler of ours, Shift+Enter in the chat otherwise ran the cell.
``static/chat.css`` (injected by anywidget) holds the widget's look, from JupyterLab's CSS variables.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import traitlets

from letta_nb.errors import OptionalDependencyError

try:
    import anywidget
except ImportError as e:  # the `notebook` extra
    raise OptionalDependencyError(
        "ChatWidget needs anywidget, which is not installed. Run: pip install 'letta-nb[notebook]' "
        "(or: pip install anywidget), then restart the kernel.") from e

__all__ = ["ChatFrontend"]

_STATIC = Path(__file__).parent / "static"


class ChatFrontend(anywidget.AnyWidget):
    """The chat's browser-side behaviour; see the module docstring."""

    _esm = _STATIC / "chat.js"
    _css = _STATIC / "chat.css"

    thinking = traitlets.Bool(False, help="Show the typing indicator: the agent is working, no text yet.").tag(
        sync=True)
    thinking_label = traitlets.Unicode("", help="Words beside the indicator (e.g. 'running archival_memory_search')."
                                       ).tag(sync=True)
    following = traitlets.Bool(True, help="The conversation scrolls to each new message (set by the browser: "
                                          "False while the user has scrolled up).").tag(sync=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._submit: Callable[[str], Any] | None = None
        self.on_msg(self._on_frontend_msg)

    def on_submit(self, handler: Callable[[str], Any]) -> None:
        """Call ``handler(text)`` when the user presses Enter in the chat's input."""
        self._submit = handler

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit" and self._submit is not None:
            self._submit(str(content.get("text", "")))
