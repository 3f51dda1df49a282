"""``ChatWidget``: chat with an agent in an ipywidget, tokens streaming in, tool calls as steps.

The kernel is never blocked: a Send click starts one background thread that consumes
``client.agents.messages.stream`` (the turn itself runs on the runtime thread) and updates child widgets
as events arrive; ipywidgets 8 syncs trait changes from any thread. While a turn runs, ``busy`` is True:
input and Send are disabled and Stop is enabled. Stop calls ``client.agents.messages.cancel``; the agent
loop then commits what was streamed, so the partial answer stays on screen *and* in recall memory.
Reopening a widget on the same agent rebuilds the conversation from the store.

A reply shows as it streams whether the model sent it through ``send_message`` or as plain content
(runtime/replies.py decides which text is the reply); reasoning shows in a collapsed ``💭 reasoning``
step, there to open, never as the reply. A tool call that waits for approval shows its arguments with
Approve / Deny (notebook/_approval_view.py, also after a reopen); the answer is a turn, streamed like one.

Each bubble carries a role mark and its time; a turn's last reply gets a footer with the turn's tokens,
latency and steps. **Retry** sends the last user message again and **Edit** sends a new text in its place:
nothing is deleted (recall memory is the agent's history), so the earlier exchange stays, dimmed and marked,
and the new one follows it. The header (notebook/_widget_header.py) picks the agent, between turns, and
shows a gauge of its context window, re-read after each turn.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from letta_nb.errors import LettaNBError, OptionalDependencyError

try:
    import ipywidgets as widgets
    import traitlets
except ImportError as e:  # the `notebook` extra: a script that only uses the runtime does not install it
    raise OptionalDependencyError(
        "ChatWidget needs ipywidgets, which is not installed. Run: pip install 'letta-nb[notebook]' "
        "(or: pip install ipywidgets), then restart the kernel.") from e
from letta_nb.notebook import _widget_views as views
from letta_nb.notebook._approval_view import ApprovalView
from letta_nb.notebook._frontend import ChatFrontend
from letta_nb.notebook._widget_composer import Composer
from letta_nb.notebook._widget_header import ChatHeader
from letta_nb.notebook._widget_memory import MemoryPanel
from letta_nb.notebook._widget_views import MessageView, ReasoningView, StepView, TurnTally
from letta_nb.runtime import approvals

__all__ = ["ChatWidget"]

HISTORY_LIMIT = 200
RETRIED = "retried below: this exchange stays in recall memory; the new reply follows it"
EDITED = "edited below: this exchange stays in recall memory; the edited message follows it"


class ChatWidget(widgets.VBox):
    """A chat with ``agent`` (name, id or AgentState). ``client`` defaults to the notebook session's client."""

    busy = traitlets.Bool(False, help="A turn is running: input and Send disabled, Stop enabled.")
    status = traitlets.Unicode("", help="What the agent is doing now (thinking, stopped, an error).")
    error = traitlets.Unicode("", help="The last error, shown inline; cleared by the next message.")
    editing = traitlets.Bool(False, help="The input holds the last user message to edit: Send resends it as an "
                                         "edit (the earlier exchange stays in recall memory).")
    context_tokens = traitlets.Int(0, help="Tokens in the agent's context window (the header's gauge), re-read "
                                           "after each turn.")
    context_window = traitlets.Int(0, help="The size of the agent's context window, in tokens.")

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
        self.approvals: dict[str, ApprovalView] = {}  # calls waiting for approval, shown with Approve / Deny
        self._turn = TurnTally()  # the running turn, for its reply's footer

        self.head = ChatHeader(client, self.agent)
        self.header, self.agent_picker = self.head.widget, self.head.picker
        self.agent_picker.observe(self._agent_picked, "value")
        self.conversation = widgets.VBox(layout=widgets.Layout(max_height="480px", overflow="auto", padding="4px"))
        self.conversation.add_class("letta-log")
        self.memory = MemoryPanel(client, lambda: self.agent, lambda text: setattr(self, "error", text))
        self.memory_panel = self.memory.widget
        self.error_box = widgets.HTML(layout=widgets.Layout(display="none"))
        self.error_box.add_class("letta-error")
        self.status_line = widgets.HTML()
        self.status_line.add_class("letta-status")
        self.composer = Composer()
        self.input, self.send_button, self.stop_button = (self.composer.input, self.composer.send_button,
                                                          self.composer.stop_button)
        self.retry_button, self.edit_button = self.composer.retry_button, self.composer.edit_button
        self.retry_button.on_click(lambda _: self.retry())
        self.edit_button.on_click(lambda _: self._toggle_editing())
        self.send_button.on_click(lambda _: self._submit(self.input.value))
        self.stop_button.on_click(lambda _: self.stop())
        # typing indicator, Enter to send, autoscroll: the part that runs in the browser (notebook/_frontend.py)
        self.frontend = ChatFrontend()
        self.frontend.on_submit(self._submit)
        self._sent = ""  # the text of the running turn: a late copy of it from the browser must not refill the box
        self.input.observe(self._input_changed, "value")

        chat = widgets.VBox([self.conversation, self.frontend, self.error_box, self.composer.widget, self.status_line],
                            layout=widgets.Layout(flex="1", min_width="0"))
        super().__init__([self.header, widgets.HBox([chat, self.memory_panel])], **kwargs)
        self.add_class("letta-chat")
        self._show_agent()
        # Memory edited anywhere (notebook/_widget_memory.py): the panel re-reads the store. A weak reference:
        # the runtime's list of subscribers must not keep a forgotten widget alive.
        this = weakref.ref(self)

        def on_change(notice: dict[str, Any]) -> None:  # on the runtime's loop: only hand the work over
            widget = this()
            if widget is not None and notice.get("agent_id") == widget.agent.id:
                widget.memory.changed()

        self._unsubscribe = client.runtime.leases.subscribe(on_change)

    # ---- public ------------------------------------------------------------------------------------
    def send(self, text: str) -> bool:
        """Start a turn with ``text`` (what Send does). False if it is empty or a turn is running."""
        return self._start(text)

    def retry(self) -> bool:
        """Send the last user message again (what Retry does). The earlier exchange stays, on screen (dimmed,
        marked) and in recall memory; the new reply follows it. False if there is none or a turn is running."""
        last = self._last_user()
        return last is not None and self._start(last.text, supersede=RETRIED)

    def edit_last(self, text: str) -> bool:
        """Send ``text`` in place of the last user message (what Edit then Send do). Nothing is deleted: the
        earlier exchange stays in recall memory, dimmed and marked here, and the edited message follows it."""
        return self._last_user() is not None and self._start(text, supersede=EDITED)

    def switch(self, agent: Any) -> bool:
        """Chat with another agent (what the picker does): its history, memory and context gauge are loaded.
        False while a turn is running."""
        if self.busy:
            return False
        self.agent = self.client.agents.retrieve(agent)
        for view in [*self._views, *self.approvals.values()]:
            view.widget.close()  # the old agent's views: their comms go too
        self._views, self.approvals = [], {}
        self.error, self.status, self.editing = "", "", False
        self._show_agent()
        return True

    def approve(self, call_id: str, approve: bool = True, reason: str | None = None) -> bool:
        """Answer a call waiting for approval (what Approve / Deny do) and stream the turn that goes on.
        False if a turn is running."""
        if self.busy:
            return False
        self.error = ""
        self._reply, self._thinking, self._stop_requested = None, None, False  # the call's step stays: it ends now
        self.busy = True
        self.status = "running the approved call…" if approve else "telling the agent why not…"
        answer = [{"type": "approval", "tool_call_id": call_id, "approve": approve, "reason": reason}]
        self._worker = threading.Thread(target=self._run, args=("", answer), name="letta_nb-chat", daemon=True)
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

    def close(self) -> None:
        """Close the widget in the frontend and stop following the agent's memory."""
        unsubscribe = getattr(self, "_unsubscribe", None)  # None: __init__ failed (ipywidgets closes on __del__)
        if unsubscribe is not None:
            unsubscribe()
        super().close()

    @property
    def messages(self) -> list[tuple[str, str]]:
        """The conversation as shown: (role, text) per bubble, oldest first."""
        return [(v.role, v.text) for v in self._views if isinstance(v, MessageView)]

    @property
    def footers(self) -> list[str]:
        """The footer (tokens · latency · steps) of each reply that has one, oldest first."""
        return [v.footer for v in self._views if isinstance(v, MessageView) and v.footer]

    @property
    def steps(self) -> list[StepView]:
        return [v for v in self._views if isinstance(v, StepView)]

    @property
    def reasoning(self) -> list[str]:
        """The reasoning shown (collapsed), one text per reasoning step, oldest first."""
        return [v.text for v in self._views if isinstance(v, ReasoningView)]

    # ---- the turn, on the worker thread -------------------------------------------------------------
    def _run(self, text: str, answer: list[dict[str, Any]] | None = None) -> None:
        note = ""
        self._turn = TurnTally()
        try:
            for event in self.client.agents.messages.stream(self.agent.id, None if answer else text,
                                                            messages=answer):
                if self._stop_requested:
                    self._cancel()  # the turn may not have been running yet when Stop was pressed
                self._on_event(event)
                if event.message_type == "stop_reason" and event.stop_reason == approvals.STOP:
                    note = "waiting for your approval"
                elif event.message_type == "stop_reason" and event.stop_reason != "end_turn":
                    note = f"{event.stop_reason}: the partial answer was kept"
        except LettaNBError as e:
            if answer:  # refused (answered elsewhere meanwhile): say so on the call's own view too
                view = self.approvals.get(answer[0]["tool_call_id"])
                if view is not None:
                    view.failed(str(e))
            self.error, note = str(e), "error"
        except Exception as e:  # noqa: BLE001 - a bug or a store failure: show it where the user is looking
            self.error, note = f"{type(e).__name__}: {e}", "error"
        finally:
            if self._thinking is not None:
                self._thinking.render()
            if self._reply is not None:
                self._reply.finish("stopped - partial answer kept" if self._stop_requested else "")
            elif self._stop_requested:
                self._turn.reply = MessageView("assistant", "", "stopped before the agent said anything",
                                               name=self.agent.name)
                self._add(self._turn.reply)
            if self._turn.reply is not None:
                self._turn.reply.finish(self._turn.reply.note, self._turn.stats())  # the footer
            self._refresh_memory()
            self.status = "stopped" if self._stop_requested else note
            self.busy = False
            # After the input is free: the gauge's read grows with the agent's archival memory (~190 ms at 5,000
            # passages, measured), and a new agent in the store becomes a choice of the picker.
            self._refresh_context()
            self.head.refresh_agents()

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
            self.frontend.thinking = False  # words are coming: the bubble itself moves now
            if self._reply is None:
                self._reply = self._turn.reply = MessageView("assistant", name=self.agent.name)
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
            self.frontend.thinking = True  # the tool runs, then the model thinks again: nothing else moves
        elif kind == "tool_return_message":
            running = self._steps.get(event.call_id)
            if running is not None:
                running.finish(event.status, event.content, event.duration_ms)
            if event.call_id in self.approvals:
                self.approvals[event.call_id].done(event.status, event.content)
        elif kind == "step":
            self._turn.steps += 1
            self._refresh_memory()
        elif kind == "stop_reason":
            self._turn.usage = event.usage
        elif kind == "approval_request_message":
            self._end_thinking()
            self.frontend.thinking = False  # the agent waits for the user now
            self._ask(event.call_id, event.name, event.arguments)

    def _ask(self, call_id: str, name: str, arguments: str) -> None:
        view = self.approvals[call_id] = ApprovalView(call_id, name, arguments,
                                                      lambda c, ok, why: self.approve(c, ok, why))
        self.conversation.children = (*self.conversation.children, view.widget)

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
        self.memory.refresh()

    def _show_agent(self) -> None:
        """Show ``self.agent``: header, placeholder, history (with calls still waiting), memory, context gauge."""
        self.head.show_agent(self.agent)
        self.input.placeholder = f"Message {self.agent.name}…  (Enter to send, Shift+Enter for a new line)"
        self._views, waiting = views.history_views(self.client, self.agent, HISTORY_LIMIT)
        self.conversation.children = tuple(v.widget for v in self._views)
        for call in waiting:
            self._ask(call.id, call.name, call.arguments)
        self._refresh_memory()
        self._refresh_context()

    def _refresh_context(self) -> None:
        self.head.refresh_context(self.agent.id)
        self.context_tokens, self.context_window = self.head.used, self.head.window

    # ---- sending ------------------------------------------------------------------------------------
    def _start(self, text: str, supersede: str = "") -> bool:
        text = (text or "").strip()
        if not text or self.busy:
            return False
        if supersede:  # an edit or a retry: the exchange it follows stays, dimmed and marked
            views.supersede_last_exchange(self._views, supersede)
        self._sent = text
        self.input.value = ""
        self.error, self.editing = "", False
        self._add(MessageView("user", text, "edited" if supersede == EDITED else ""))
        self._reply, self._thinking, self._steps, self._stop_requested = None, None, {}, False
        self.busy = True
        self.status = "thinking…"
        self._worker = threading.Thread(target=self._run, args=(text,), name="letta_nb-chat", daemon=True)
        self._worker.start()
        return True

    def _submit(self, text: str) -> bool:
        """Send or Enter: an edit of the last message while editing, else a new message."""
        return self.edit_last(text) if self.editing else self._start(text)

    def _last_user(self) -> MessageView | None:
        return views.last_user_message(self._views)

    def _toggle_editing(self) -> None:
        """Edit: the last user message into the input (Send then resends it, edited); again: back to a new one."""
        last = self._last_user()
        if self.busy or last is None:
            return
        self.editing = not self.editing
        self.input.value = last.text if self.editing else ""

    def _agent_picked(self, change: Any) -> None:
        if change.new == self.agent.name:
            return
        if not self.switch(change.new):  # a turn is running: the picker is disabled, but a script may set it
            self.agent_picker.value = self.agent.name

    # ---- trait reactions ----------------------------------------------------------------------------
    def _input_changed(self, change: Any) -> None:
        # ipywidgets holds a widget's updates back while one is in flight, so the last keystrokes of a message
        # sent with Enter (a custom message, never held back) can reach the kernel after it: drop them.
        sent = self._sent
        if sent and change.new and sent.startswith(change.new.strip()):
            self.input.value = ""

    @traitlets.observe("busy")
    def _busy_changed(self, change: Any) -> None:
        if not change.new:
            self._sent = ""
        self.composer.set_busy(change.new)
        self.agent_picker.disabled = change.new
        self.frontend.thinking = change.new  # from the press of Send until the first words (see _on_event)

    @traitlets.observe("status")
    def _status_changed(self, change: Any) -> None:
        self.status_line.value = f"<span style='color:#6e7781'>{change.new}</span>" if change.new else ""
        self.frontend.thinking_label = change.new

    @traitlets.observe("editing")
    def _editing_changed(self, change: Any) -> None:
        self.edit_button.description = "Cancel edit" if change.new else "Edit"
        self.status = ("editing your last message: Send resends it; the earlier exchange stays in recall memory "
                       "and the edited one follows it") if change.new else ""

    @traitlets.observe("error")
    def _error_changed(self, change: Any) -> None:
        from letta_nb import _repr

        self.error_box.value = (f"<div style='color:#cf222e;border:1px solid #cf222e;border-radius:4px;padding:4px'>"
                                f"{_repr.esc(change.new)}</div>") if change.new else ""
        self.error_box.layout.display = "block" if change.new else "none"
