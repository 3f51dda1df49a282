"""ChatWidget without a browser: its synced state (traitlets) and the comm messages it sends.

Every widget gets a recording comm (``comm.create_comm`` is swapped for one that keeps what would go to the
frontend, and from which thread), so the tests see what a browser would receive: the reply growing in
several updates sent from the widget's worker thread, steps, the memory panel, disabled controls.
"""

from __future__ import annotations

import html
import threading
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import comm
import pytest

import letta_nb
from letta_nb.notebook.widget import ChatWidget
from tests.agent_helpers import wait_until

INTRO = "Hello! I'm letta_nb's offline model: deterministic and needing no API key."


class RecordingComm:
    """Stands in for a kernel comm: records every message a widget sends, with the sending thread."""

    sent: ClassVar[list[tuple[str, dict[str, Any], str]]] = []
    kernel = "recording"

    def __init__(self, **kwargs: Any):
        self.comm_id = kwargs.get("comm_id") or uuid.uuid4().hex
        self.open_data = kwargs.get("data")

    def send(self, data: Any = None, buffers: Any = None, **kwargs: Any) -> None:
        RecordingComm.sent.append((self.comm_id, data, threading.current_thread().name))

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RecordingComm]]:
    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: RecordingComm(**kwargs))
    yield RecordingComm


def updates_of(widget: Any, key: str) -> list[tuple[Any, str]]:
    """(value, thread name) of each synced update of ``key`` sent for ``widget``."""
    return [(data["state"][key], thread) for comm_id, data, thread in RecordingComm.sent
            if comm_id == widget.comm.comm_id and data.get("method") == "update" and key in data["state"]]


def test_history_is_rebuilt_from_the_store(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    client.agents.messages.create("sam", "My name is Ada.")
    client.agents.messages.create("sam", "Remember that the MemGPT paper pages memory.")
    w = ChatWidget("sam", client=client)
    assert w.messages[0] == ("user", "My name is Ada.")
    assert ("assistant", 'Got it - I saved "Name: Ada" to my core memory (human).') in w.messages
    assert [s.name for s in w.steps] == ["core_memory_append", "archival_memory_insert"]
    assert all(s.status == "success" for s in w.steps)
    assert w.steps[0].widget.titles == ("⚙ core_memory_append · success",)
    assert w.steps[0].widget.selected_index is None  # steps start collapsed
    assert "&quot;label&quot;: &quot;human&quot;" in w.steps[0].body.value  # arguments, pretty-printed and escaped
    assert "Name: Ada" in w.memory_panel.value
    # a memgpt agent's content beside its calls was inner thoughts: collapsed reasoning, not a bubble
    assert len(w.reasoning) == 4 and all(w.reasoning)
    assert len(w.conversation.children) == len(w.messages) + len(w.steps) + len(w.reasoning)


def test_send_streams_the_reply_from_a_worker_thread(client: letta_nb.Client) -> None:
    client.agents.create("sam", model="offline?tps=60")
    w = ChatWidget("sam", client=client)
    assert w.input.disabled is False and w.stop_button.disabled is True
    w.input.value = "My name is Ada."
    w.send_button.click()
    # The click returned at once (the kernel is free) and the controls say a turn is running.
    assert w.busy and w.input.disabled and w.send_button.disabled and not w.stop_button.disabled
    assert w.input.value == ""
    assert w.wait(timeout=60)
    assert not w.busy and not w.input.disabled and w.stop_button.disabled
    reply = 'Got it - I saved "Name: Ada" to my core memory (human).'
    assert w.messages == [("user", "My name is Ada."), ("assistant", reply)]
    bubble = w._views[-1].widget
    assert bubble.outputs[0]["data"]["text/html"] == f"<div class='letta-md'><p>{html.escape(reply)}</p>\n</div>"
    texts = [outputs[0]["data"]["text/plain"] for outputs, _ in updates_of(bubble, "outputs")]
    assert len(texts) >= 2 and texts[-1] == reply  # it grew in several synced updates ...
    assert all(reply.startswith(t) for t in texts)  # ... each a prefix of the reply
    assert {thread for _, thread in updates_of(bubble, "outputs")} == {"letta_nb-chat"}
    (step,) = w.steps
    assert step.name == "core_memory_append" and step.status == "success" and step.ms is not None
    assert step.widget.titles[0].startswith("⚙ core_memory_append · success · ")
    assert "Name: Ada" in w.memory_panel.value  # the live memory panel followed the edit
    assert any("Name: Ada" in v for v, _ in updates_of(w.memory_panel, "value"))


def test_stop_keeps_the_partial_answer_on_screen_and_in_recall(client: letta_nb.Client) -> None:
    client.agents.create("slow", model="offline?tps=20")
    w = ChatWidget("slow", client=client)
    assert w.send("Hi!")
    wait_until(lambda: len(w.messages) == 2 and len(w.messages[1][1]) > 15, "the first words of the reply",
               timeout=60)
    w.stop_button.click()
    assert w.wait(timeout=60)
    assert w.status == "stopped" and not w.busy and not w.input.disabled
    partial = w.messages[-1][1]
    assert INTRO.startswith(partial[:40]) and len(partial) < 150
    assert "stopped - partial answer kept" in w._views[-1].widget.outputs[0]["data"]["text/html"]
    stored = client.agents.messages.list("slow")[-1]
    assert stored.message_type == "assistant_message" and stored.status == "cancelled"
    assert stored.text == partial
    reopened = ChatWidget("slow", client=client)
    assert reopened.messages[-1] == ("assistant", partial)
    assert "cancelled: partial answer" in reopened._views[-1].widget.outputs[0]["data"]["text/html"]


def test_markdown_is_rendered_and_html_is_escaped(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    w.send("Remember that **bold** and <script>alert(1)</script> are fine.")
    assert w.wait(timeout=60)
    user = w._views[0].widget.outputs[0]["data"]["text/html"]
    assert "<strong>bold</strong>" in user and "<script>" not in user and "&lt;script&gt;alert(1)" in user


def test_errors_show_inline_and_free_the_input(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    client.agents.delete("sam")
    assert w.send("hello?")
    assert w.wait(timeout=60)
    assert "No agent named" in w.error
    assert w.error_box.layout.display == "block" and "No agent named" in w.error_box.value
    assert not w.busy and not w.input.disabled
    client.agents.create("sam2")
    w2 = ChatWidget("sam2", client=client)
    assert w2.error_box.layout.display == "none"


def test_send_ignores_empty_input_and_a_second_message_while_busy(client: letta_nb.Client) -> None:
    client.agents.create("slow", model="offline?tps=20")
    w = ChatWidget("slow", client=client)
    assert w.send("   ") is False and w.messages == []
    assert w.send("Hi!")
    assert w.send("again") is False
    w.stop()
    assert w.wait(timeout=60)
    assert [role for role, _ in w.messages] == ["user", "assistant"]


def test_unknown_agent_fails_at_construction(client: letta_nb.Client) -> None:
    with pytest.raises(letta_nb.AgentNotFoundError, match="No agent named 'nobody'"):
        ChatWidget("nobody", client=client)


def test_top_level_chatwidget_uses_the_notebook_session(letta_home: Any) -> None:
    from letta_nb.notebook._session import NotebookSession, set_session

    session = NotebookSession()
    old = set_session(session)
    try:
        session.client.agents.create("sam")
        w = letta_nb.ChatWidget("sam")
        assert w.client is session.client
    finally:
        set_session(old)
        session.close()


def test_a_plain_content_reply_streams_into_its_bubble(client: letta_nb.Client) -> None:
    # the reported bug: no send_message, so the model answers in content; it streamed as reasoning and the
    # bubble stayed empty until the widget was reopened
    client.agents.create("bare", model="offline?tps=60", include_base_tools=False)
    w = ChatWidget("bare", client=client)
    assert w.send("Hi!") and w.wait(timeout=60)
    assert w.messages[-1][0] == "assistant" and w.messages[-1][1].startswith(INTRO)
    bubble = w._views[-1].widget
    texts = [outputs[0]["data"]["text/plain"] for outputs, _ in updates_of(bubble, "outputs")]
    assert len(texts) >= 2 and all(w.messages[-1][1].startswith(t) for t in texts)  # grew while streaming
    assert w.reasoning == []
    assert ChatWidget("bare", client=client).messages == w.messages


def test_reasoning_shows_collapsed_apart_from_the_reply(client: letta_nb.Client) -> None:
    client.agents.create("think", agent_type="letta_v1_agent", model="offline?reasoning=field")
    w = ChatWidget("think", client=client)
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    assert w.messages[-1] == ("assistant", 'Got it - I saved "Name: Ada" to my core memory (human).')
    assert w.reasoning[0].startswith("The user told me their name")
    views = [v for v in w._views if type(v).__name__ == "ReasoningView"]
    assert all(v.widget.selected_index is None and v.widget.titles == ("💭 reasoning",) for v in views)
    assert "letta-reasoning" in views[0].widget._dom_classes
    assert all("The user told me" not in text for _, text in w.messages)


def test_inner_thoughts_that_were_the_reply_show_once_as_the_reply(client: letta_nb.Client) -> None:
    # a memgpt agent with send_message whose model answers in plain content: its content streamed as inner
    # thoughts, then the step ended without a call, so it was the reply: a bubble, no leftover reasoning
    client.agents.create("sam", model="offline?reply=content")
    w = ChatWidget("sam", client=client)
    assert w.send("Hi!") and w.wait(timeout=60)
    assert w.messages[-1][0] == "assistant" and w.messages[-1][1].startswith(INTRO)
    assert w.reasoning == [] and len(w.conversation.children) == 2


# ---- issue 15: what a new user met in the first minute --------------------------------------------------


def frontend_submit(w: ChatWidget, text: str) -> None:
    """What the browser sends when Enter is pressed in the input (static/chat.js): a custom comm message."""
    w.frontend._handle_msg({"content": {"data": {"method": "custom", "content": {"event": "submit", "text": text}}},
                            "buffers": []})


def test_enter_in_the_browser_sends_the_message(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    assert "Enter to send, Shift+Enter for a new line" in w.input.placeholder
    w.input.value = "My name is Ada."  # typed (synced as the user types)
    frontend_submit(w, "My name is Ada.")
    w.input.value = "My name is Ada"  # the last keystrokes, held back by the browser, arriving after the send
    assert w.input.value == ""  # ... do not refill the box
    assert w.wait(timeout=60)
    assert w.messages[0] == ("user", "My name is Ada.") and w.input.value == ""
    frontend_submit(w, "   ")  # Enter in an empty input sends nothing
    assert len(w.messages) == 2


def test_thinking_indicator_shows_before_the_first_token_and_hides_after(client: letta_nb.Client) -> None:
    client.agents.create("sam", model="offline?tps=60")
    w = ChatWidget("sam", client=client)
    assert w.frontend.thinking is False
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    assert w.frontend.thinking is False
    # The order the browser received: indicator on, then off, then the reply's first words.
    bubble = w._views[-1].widget
    order = []
    for i, (comm_id, data, _) in enumerate(RecordingComm.sent):
        state = data.get("state", {}) if data.get("method") == "update" else {}
        if comm_id == w.frontend.comm.comm_id and "thinking" in state:
            order.append((i, "on" if state["thinking"] else "off"))
        elif comm_id == bubble.comm.comm_id and "outputs" in state and state["outputs"][0]["data"]["text/plain"]:
            order.append((i, "words"))
    kinds = [k for _, k in order]
    assert kinds[0] == "on" and "words" in kinds
    first_words = kinds.index("words")
    assert kinds[first_words - 1] == "off"  # hidden just before the first words showed
    assert kinds[-1] in ("off", "words")


def test_code_keeps_its_angle_brackets_and_model_html_does_not_run(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    evil = "<img src=x onerror=alert(1)> <script>alert(2)</script> [x](javascript:alert(3))"
    assert w.send(f"Remember that `a < b && c > d` matters and so does a < b && c > d. {evil}") and w.wait(60)
    user = w._views[0].widget.outputs[0]["data"]["text/html"]
    # escaped exactly once, in code and in prose (the bug: "&amp;lt;" showed as "&lt;" inside code)
    assert "<code>a &lt; b &amp;&amp; c &gt; d</code>" in user and "so does a &lt; b &amp;&amp; c &gt; d." in user
    assert "&amp;lt;" not in user and "<img" not in user and "<script" not in user and 'href="javascript' not in user
    reply = w._views[-1].widget.outputs[0]["data"]["text/html"]  # the model quoting it back: same rules
    assert "<code>a &lt; b &amp;&amp; c &gt; d</code>" in reply and "<img" not in reply
    fence = w._views[0].__class__("assistant", "```python\nif a < b && c > d:\n    pass\n```")
    code = fence.widget.outputs[0]["data"]["text/html"]
    assert '<pre class="highlight letta-code"><code class="language-python">' in code
    assert "&lt;" in code and "&amp;&amp;" in code and "&amp;lt;" not in code


def test_memory_panel_follows_edits_made_elsewhere_in_the_kernel(client: letta_nb.Client) -> None:
    client.agents.create("ada")
    w = ChatWidget("ada", client=client)
    client.agents.blocks.update("ada", "human", value="Prefers tea.")  # a %letta memory set, another cell
    wait_until(lambda: "Prefers tea." in w.memory_panel.value, "the panel to show the edit", timeout=30)
    other = ChatWidget("ada", client=client)  # the notebook's scripted widget on the same agent
    assert other.send("My name is Ada.") and other.wait(timeout=60)
    wait_until(lambda: "Name: Ada" in w.memory_panel.value, "the first panel to follow the second widget's turn",
               timeout=30)
    subscribers = len(client.runtime.leases._subscribers)
    w.close()
    assert len(client.runtime.leases._subscribers) == subscribers - 1  # a closed widget stops listening


def test_telling_the_same_fact_twice_stores_it_once(client: letta_nb.Client) -> None:
    # the notebook's own script: its scripted widget says "My name is Ada.", then the user does in the chat
    client.agents.create("ada")
    for _ in range(2):
        w = ChatWidget("ada", client=client)
        assert w.send("My name is Ada.") and w.wait(timeout=60)
    human = client.agents.blocks.retrieve("ada", "human").value
    assert human.count("Name: Ada") == 1
    client.agents.messages.create("ada", "My name is Grace.")  # a new fact is still added
    assert client.agents.blocks.retrieve("ada", "human").value.count("Name:") == 2
