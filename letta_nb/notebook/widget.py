"""``ChatWidget``: chat with an agent in an ipywidget, tokens streaming in, tool calls as steps.

The kernel is never blocked: a Send click starts one background thread that consumes
``client.agents.messages.stream`` (the turn itself runs on the runtime thread) and updates child widgets
as events arrive; ipywidgets 8 syncs trait changes from any thread. While a turn runs, ``busy`` is True:
input and Send are disabled and Stop is enabled. Stop calls ``client.agents.messages.cancel``; the agent
loop then commits what was streamed, so the partial answer stays on screen *and* in recall memory.
Reopening a widget on the same agent rebuilds the conversation from the store.

A reply shows as it streams whether the model sent it through ``send_message`` or as plain content
(runtime/replies.py decides which text is the reply); reasoning shows in a collapsed ``💭 reasoning``
step, there to open, never as the reply.
"""

from __future__ import annotations

import threading
from typing import Any

from letta_nb.errors import LettaNBError, OptionalDependencyError

try:
    import ipywidgets as widgets
    import traitlets
except ImportError as e:  # the `notebook` extra: a script that only uses the runtime does not install it
    raise OptionalDependencyError(
        "ChatWidget needs ipywidgets, which is not installed. Run: pip install 'letta-nb[notebook]' "
        "(or: pip install ipywidgets), then restart the kernel.") from e
from letta_nb.notebook._widget_views import MessageView, ReasoningView, StepView, memory_html
from letta_nb.runtime.replies import content_is_reply

__all__ = ["ChatWidget"]

HISTORY_LIMIT = 200


class ChatWidget(widgets.VBox):
    """A chat with ``agent`` (name, id or AgentState). ``client`` defaults to the notebook session's client."""

    busy = traitlets.Bool(False, help="A turn is running: input and Send disabled, Stop enabled.")
    status = traitlets.Unicode("", help="What the agent is doing now (thinking, stopped, an error).")
    error = traitlets.Unicode("", help="The last error, shown inline; cleared by the next message.")

    def __init__(self, agent: Any, client: Any = None, **kwargs: Any):
        if client is None:
            from letta_nb.notebook._session import current_session

            client = current_session().client
        self.client = client
        self.agent = client.agents.retrieve(agent)
        self._worker: threading.Thread | None = None
        self._stop_requested = False
        self._reply: MessageView | None = None
        self._thinking: ReasoningView | None = None
        self._steps: dict[str, StepView] = {}
        self._views: list[MessageView | StepView | ReasoningView] = []

        self.header = widgets.HTML(f"<b>{self.agent.name}</b> <span style='color:#6e7781'>· model "
                                   f"{self.agent.model}</span>")
        self.conversation = widgets.VBox(layout=widgets.Layout(max_height="480px", overflow="auto", padding="4px"))
        self.conversation.add_class("letta-log")
        self.memory_panel = widgets.HTML(layout=widgets.Layout(width="32%", padding="0 0 0 8px"))
        self.memory_panel.add_class("letta-memory")
        self.error_box = widgets.HTML(layout=widgets.Layout(display="none"))
        self.error_box.add_class("letta-error")
        self.status_line = widgets.HTML()
        self.status_line.add_class("letta-status")
        self.input = widgets.Textarea(placeholder=f"Message {self.agent.name}…  (Shift+Enter for a new line)",
                                      layout=widgets.Layout(flex="1", height="60px"))
        self.input.add_class("letta-input")
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane")
        self.send_button.add_class("letta-send")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.stop_button.add_class("letta-stop")
        self.send_button.on_click(lambda _: self.send(self.input.value))
        self.stop_button.on_click(lambda _: self.stop())

        chat = widgets.VBox([self.conversation, self.error_box, widgets.HBox([self.input, self.send_button,
                                                                    self.stop_button]), self.status_line],
                            layout=widgets.Layout(flex="1"))
        super().__init__([self.header, widgets.HBox([chat, self.memory_panel])], **kwargs)
        self.add_class("letta-chat")
        self._load_history()
        self._refresh_memory()

    # ---- public ------------------------------------------------------------------------------------
    def send(self, text: str) -> bool:
        """Start a turn with ``text`` (what Send does). False if it is empty or a turn is running."""
        text = (text or "").strip()
        if not text or self.busy:
            return False
        self.input.value = ""
        self.error = ""
        self._add(MessageView("user", text))
        self._reply, self._thinking, self._steps, self._stop_requested = None, None, {}, False
        self.busy = True
        self.status = "thinking…"
        self._worker = threading.Thread(target=self._run, args=(text,), name="letta_nb-chat", daemon=True)
        self._worker.start()
        return True

    def stop(self) -> None:
        """Cancel the running turn (what Stop does); what the agent said so far is kept."""
        if not self.busy:
            return
        self._stop_requested = True
        self.status = "stopping…"
        self._cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running turn (if any) has finished; True if none is running now."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not self.busy

    @property
    def messages(self) -> list[tuple[str, str]]:
        """The conversation as shown: (role, text) per bubble, oldest first."""
        return [(v.role, v.text) for v in self._views if isinstance(v, MessageView)]

    @property
    def steps(self) -> list[StepView]:
        return [v for v in self._views if isinstance(v, StepView)]

    @property
    def reasoning(self) -> list[str]:
        """The reasoning shown (collapsed), one text per reasoning step, oldest first."""
        return [v.text for v in self._views if isinstance(v, ReasoningView)]

    # ---- the turn, on the worker thread -------------------------------------------------------------
    def _run(self, text: str) -> None:
        note = ""
        try:
            for event in self.client.agents.messages.stream(self.agent.id, text):
                if self._stop_requested:
                    self._cancel()  # the turn may not have been running yet when Stop was pressed
                self._on_event(event)
                if event.message_type == "stop_reason" and event.stop_reason != "end_turn":
                    note = f"{event.stop_reason}: the partial answer was kept"
        except LettaNBError as e:
            self.error, note = str(e), "error"
        except Exception as e:  # noqa: BLE001 - a bug or a store failure: show it where the user is looking
            self.error, note = f"{type(e).__name__}: {e}", "error"
        finally:
            if self._thinking is not None:
                self._thinking.render()
            if self._reply is not None:
                self._reply.finish("stopped - partial answer kept" if self._stop_requested else "")
            elif self._stop_requested:
                self._add(MessageView("assistant", "", "stopped before the agent said anything"))
            self._refresh_memory()
            self.status = "stopped" if self._stop_requested else note
            self.busy = False

    def _on_event(self, event: Any) -> None:
        kind = event.message_type
        if kind == "reasoning_message":
            if self._thinking is None:
                self._thinking = ReasoningView()
                self._add(self._thinking)
            self._thinking.append(event.text)
        elif kind == "assistant_message":
            if self._thinking is not None and self._reply is None and event.text == self._thinking.text:
                self._remove(self._thinking)  # inner thoughts that turned out to be the reply: shown once, as it
            self._end_thinking()
            if self._reply is None:
                self._reply = MessageView("assistant")
                self._add(self._reply)
                self.status = "replying…"
            self._reply.append(event.text)
        elif kind == "tool_call_message":
            self._end_thinking()
            if self._reply is not None:  # a reply before a tool call is complete; the next text is a new bubble
                self._reply.finish()
                self._reply = None
            step = self._steps[event.call_id] = StepView(event.call_id, event.name, event.arguments)
            self._add(step)
            self.status = f"running {event.name}…"
        elif kind == "tool_return_message":
            running = self._steps.get(event.call_id)
            if running is not None:
                running.finish(event.status, event.content, event.duration_ms)
        elif kind == "step":
            self._refresh_memory()

    def _end_thinking(self) -> None:
        """Reasoning is over once the reply or a tool call comes: show all of it; new reasoning is a new step."""
        if self._thinking is not None:
            self._thinking.render()
            self._thinking = None

    def _cancel(self) -> None:
        try:
            self.client.agents.messages.cancel(self.agent.id)
        except LettaNBError as e:
            self.error = str(e)

    # ---- views ----------------------------------------------------------------------------------------
    def _add(self, view: MessageView | StepView | ReasoningView) -> None:
        self._views.append(view)
        self.conversation.children = (*self.conversation.children, view.widget)

    def _remove(self, view: MessageView | StepView | ReasoningView) -> None:
        self._views.remove(view)
        self.conversation.children = tuple(c for c in self.conversation.children if c is not view.widget)

    def _refresh_memory(self) -> None:
        try:
            blocks = self.client.agents.blocks.list(self.agent.id)
        except LettaNBError as e:
            self.error = str(e)
            return
        self.memory_panel.value = memory_html(self.agent.name, blocks)

    def _load_history(self) -> None:
        steps: dict[str, StepView] = {}
        content_reply = content_is_reply(self.agent.agent_type, self.agent.tools)
        for m in self.client.agents.messages.list(self.agent.id, limit=HISTORY_LIMIT):
            kind = m.message_type
            if m.role == "assistant" and m.tool_calls and m.content:  # the content beside a call, as it streamed
                self._add(MessageView("assistant", m.content) if content_reply else ReasoningView(m.content))
            if kind in ("user_message", "assistant_message"):
                note = f"{m.status}: partial answer" if m.status in ("cancelled", "error") else ""
                self._add(MessageView("user" if kind == "user_message" else "assistant", m.text, note))
            elif kind == "tool_call_message":
                for call in m.tool_calls:
                    step = steps[call.id] = StepView(call.id, call.name, call.arguments)
                    self._add(step)
            elif kind == "tool_return_message" and m.tool_call_id in steps:
                steps[m.tool_call_id].finish(m.status or "success", m.content or "", None)

    # ---- trait reactions ----------------------------------------------------------------------------
    @traitlets.observe("busy")
    def _busy_changed(self, change: Any) -> None:
        self.input.disabled = self.send_button.disabled = change.new
        self.stop_button.disabled = not change.new

    @traitlets.observe("status")
    def _status_changed(self, change: Any) -> None:
        self.status_line.value = f"<span style='color:#6e7781'>{change.new}</span>" if change.new else ""

    @traitlets.observe("error")
    def _error_changed(self, change: Any) -> None:
        from letta_nb import _repr

        self.error_box.value = (f"<div style='color:#cf222e;border:1px solid #cf222e;border-radius:4px;padding:4px'>"
                                f"{_repr.esc(change.new)}</div>") if change.new else ""
        self.error_box.layout.display = "block" if change.new else "none"
