"""The ChatWidget's composer: the input box and its buttons (Send, Stop, Retry, Edit).

Buttons are as wide as their words: at ipywidgets' default 148 px they were pushed out of a narrow chat.
While a turn runs (:meth:`Composer.set_busy`) only Stop is enabled. What a button does is the widget's
business (notebook/widget.py); the composer only lays them out and locks them.
"""

from __future__ import annotations

import ipywidgets as widgets

__all__ = ["Composer"]


def _button(description: str, css: str, icon: str, tooltip: str = "", style: str = "") -> widgets.Button:
    button = widgets.Button(description=description, button_style=style, icon=icon, tooltip=tooltip,
                            layout=widgets.Layout(width="auto", flex="0 0 auto"))
    button.add_class(css)
    return button


class Composer:
    """``widget`` is the row: the input, Send over Stop, Retry over Edit."""

    def __init__(self) -> None:
        self.input = widgets.Textarea(layout=widgets.Layout(flex="1 1 auto", height="60px", min_width="0"))
        self.input.add_class("letta-input")
        self.send_button = _button("Send", "letta-send", "paper-plane", style="primary")
        self.stop_button = _button("Stop", "letta-stop", "stop", style="warning")
        self.stop_button.disabled = True
        self.retry_button = _button("Retry", "letta-retry", "redo",
                                    "Send your last message again (this exchange stays in recall memory)")
        self.edit_button = _button("Edit", "letta-edit", "edit",
                                   "Edit your last message and send it again (this exchange stays in recall memory)")
        # the columns keep their buttons' width (squeezed, a button shows only "…"); the input takes the rest
        column = widgets.Layout(flex="0 0 auto", min_width="max-content")
        self.widget = widgets.HBox([self.input, widgets.VBox([self.send_button, self.stop_button], layout=column),
                                    widgets.VBox([self.retry_button, self.edit_button], layout=column)])
        self.widget.add_class("letta-composer")

    def set_busy(self, busy: bool) -> None:
        self.input.disabled = self.send_button.disabled = busy
        self.retry_button.disabled = self.edit_button.disabled = busy
        self.stop_button.disabled = not busy
