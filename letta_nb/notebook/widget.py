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
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from letta_nb.errors import LettaNBError, OptionalDependencyError, RuntimeClosedError

try:
    import ipywidgets as widgets
    import traitlets
except ImportError as e:  # the `notebook` extra: a script that only uses the runtime does not install it
    raise OptionalDependencyError(
        "ChatWidget needs ipywidgets, which is not installed. Run: pip install 'letta-nb[notebook]' "
        "(or: pip install ipywidgets), then restart the kernel.") from e
from letta_nb.notebook._approval_view import ApprovalView
from letta_nb.notebook._frontend import ChatFrontend
from letta_nb.notebook._widget_views import MessageView, ReasoningView, StepView, memory_html
from letta_nb.runtime import approvals
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
        self.approvals: dict[str, ApprovalView] = {}  # calls waiting for approval, shown with Approve / Deny
        self._memory_lock = threading.Lock()
        self._memory_dirty = self._memory_refreshing = False

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
        self.input = widgets.Textarea(placeholder=f"Message {self.agent.name}…  (Enter to send, Shift+Enter for a "
                                                  "new line)",
                                      layout=widgets.Layout(flex="1 1 auto", height="60px", min_width="0"))
        self.input.add_class("letta-input")
        # buttons as wide as their words: at ipywidgets' default 148 px they were pushed out of a narrow chat
        self.send_button = widgets.Button(description="Send", button_style="primary", icon="paper-plane",
                                          layout=widgets.Layout(width="auto", flex="0 0 auto"))
        self.send_button.add_class("letta-send")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True,
                                          layout=widgets.Layout(width="auto", flex="0 0 auto"))
        self.stop_button.add_class("letta-stop")
        self.send_button.on_click(lambda _: self.send(self.input.value))
        self.stop_button.on_click(lambda _: self.stop())
        # typing indicator, Enter to send, autoscroll: the part that runs in the browser (notebook/_frontend.py)
        self.frontend = ChatFrontend()
        self.frontend.on_submit(self.send)
        self._sent = ""  # the text of the running turn: a late copy of it from the browser must not refill the box
        self.input.observe(self._input_changed, "value")

        chat = widgets.VBox([self.conversation, self.frontend, self.error_box,
                             widgets.HBox([self.input, self.send_button, self.stop_button]), self.status_line],
                            layout=widgets.Layout(flex="1", min_width="0"))
        super().__init__([self.header, widgets.HBox([chat, self.memory_panel])], **kwargs)
        self.add_class("letta-chat")
        self._load_history()
        self._refresh_memory()
        # Memory edited anywhere in this kernel (another widget, %letta memory set, a %%letta turn) or, with
        # Redis, in another kernel: the panel re-reads the store. A weak reference: the runtime's list of
        # subscribers must not keep a forgotten widget alive.
        this = weakref.ref(self)
        agent_id = self.agent.id

        def on_change(notice: dict[str, Any]) -> None:  # on the runtime's loop: only hand the work over
            widget = this()
            if widget is not None and notice.get("agent_id") == agent_id:
                widget._memory_changed()

        self._unsubscribe = client.runtime.leases.subscribe(on_change)

    # ---- public ------------------------------------------------------------------------------------
    def send(self, text: str) -> bool:
        """Start a turn with ``text`` (what Send does). False if it is empty or a turn is running."""
        text = (text or "").strip()
        if not text or self.busy:
            return False
        self._sent = text
        self.input.value = ""
        self.error = ""
        self._add(MessageView("user", text))
        self._reply, self._thinking, self._steps, self._stop_requested = None, None, {}, False
        self.busy = True
        self.status = "thinking…"
        self._worker = threading.Thread(target=self._run, args=(text,), name="letta_nb-chat", daemon=True)
        self._worker.start()
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
    def steps(self) -> list[StepView]:
        return [v for v in self._views if isinstance(v, StepView)]

    @property
    def reasoning(self) -> list[str]:
        """The reasoning shown (collapsed), one text per reasoning step, oldest first."""
        return [v.text for v in self._views if isinstance(v, ReasoningView)]

    # ---- the turn, on the worker thread -------------------------------------------------------------
    def _run(self, text: str, answer: list[dict[str, Any]] | None = None) -> None:
        note = ""
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
            self.frontend.thinking = False  # words are coming: the bubble itself moves now
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
            self.frontend.thinking = True  # the tool runs, then the model thinks again: nothing else moves
        elif kind == "tool_return_message":
            running = self._steps.get(event.call_id)
            if running is not None:
                running.finish(event.status, event.content, event.duration_ms)
            if event.call_id in self.approvals:
                self.approvals[event.call_id].done(event.status, event.content)
        elif kind == "step":
            self._refresh_memory()
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

    def _memory_changed(self) -> None:
        """The agent changed somewhere: re-read its blocks on a thread of ours (never on the runtime's loop,
        where this is called). Notices that come while a refresh runs are folded into one more refresh."""
        with self._memory_lock:
            self._memory_dirty = True
            if self._memory_refreshing:
                return
            self._memory_refreshing = True
        threading.Thread(target=self._refresh_memory_while_dirty, name="letta_nb-chat-memory", daemon=True).start()

    def _refresh_memory_while_dirty(self) -> None:
        while True:
            with self._memory_lock:
                if not self._memory_dirty:
                    self._memory_refreshing = False
                    return
                self._memory_dirty = False
            self._refresh_memory()

    def _refresh_memory(self) -> None:
        try:
            blocks = self.client.agents.blocks.list(self.agent.id)
        except RuntimeClosedError:
            return  # the client closed while a change notice was on its way: nothing left to show
        except LettaNBError as e:
            self.error = str(e)
            return
        self.memory_panel.value = memory_html(self.agent.name, blocks)

    def _load_history(self) -> None:
        steps: dict[str, StepView] = {}
        content_reply = content_is_reply(self.agent.agent_type, self.agent.tools)
        history = self.client.agents.messages.list(self.agent.id, limit=HISTORY_LIMIT)
        for m in history:
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
        for call in approvals.pending(history):  # still waiting (this kernel may have restarted since)
            self._ask(call.id, call.name, call.arguments)

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
        self.input.disabled = self.send_button.disabled = change.new
        self.stop_button.disabled = not change.new
        self.frontend.thinking = change.new  # from the press of Send until the first words (see _on_event)

    @traitlets.observe("status")
    def _status_changed(self, change: Any) -> None:
        self.status_line.value = f"<span style='color:#6e7781'>{change.new}</span>" if change.new else ""
        self.frontend.thinking_label = change.new

    @traitlets.observe("error")
    def _error_changed(self, change: Any) -> None:
        from letta_nb import _repr

        self.error_box.value = (f"<div style='color:#cf222e;border:1px solid #cf222e;border-radius:4px;padding:4px'>"
                                f"{_repr.esc(change.new)}</div>") if change.new else ""
        self.error_box.layout.display = "block" if change.new else "none"
