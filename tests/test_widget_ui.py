"""The chat UI beyond streaming (issue 15, deliverable 2), driven from Python through the widget's state:
role marks and timestamps, the per-reply footer, retry and edit of the last message, the agent picker and the
context gauge. Widgets talk to a recording comm (tests/test_widget.py), so what a browser would receive is
what the tests read; the browser side is in tests/test_browser.py.
"""

from __future__ import annotations

import datetime as dt

import letta_nb
from letta_nb.notebook.widget import EDITED, RETRIED, ChatWidget
from tests.agent_helpers import wait_until
from tests.test_widget import RecordingComm, recording_comm, updates_of  # noqa: F401 - the autouse fixture

ADA = 'Got it - I saved "Name: Ada" to my core memory (human).'


def bubbles(w: ChatWidget) -> list:
    return [v for v in w._views if type(v).__name__ == "MessageView"]


def test_each_bubble_has_a_role_mark_and_the_time_it_was_said(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    before = dt.datetime.now(dt.timezone.utc)
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    after = dt.datetime.now(dt.timezone.utc)
    user, reply = bubbles(w)
    assert (user.mark, user.name, reply.mark, reply.name) == ("Y", "You", "S", "sam")
    assert before <= user.at <= reply.at <= after
    # the text stays the first output (what text/plain and copy read); the mark and time are the second
    assert reply.widget.outputs[0]["data"]["text/plain"] == ADA
    meta = reply.widget.outputs[1]["data"]["text/html"]
    assert "<span class='letta-avatar'>S</span>" in meta and "<span class='letta-who'>sam</span>" in meta
    assert f"<time datetime='{reply.at.isoformat()}'" in meta and f">{reply.at.strftime('%H:%M')}</time>" in meta
    # reopened: the times are the stored ones, not the time of the reopening
    stored = [m for m in client.agents.messages.list("sam") if m.message_type in ("user_message",
                                                                                "assistant_message")]
    again = bubbles(ChatWidget("sam", client=client))
    assert [(b.role, b.mark) for b in again] == [("user", "Y"), ("assistant", "S")]
    assert [b.at for b in again] == [m.created_at.astimezone() for m in stored]


def test_a_reply_has_a_footer_with_the_turns_tokens_latency_and_steps(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    client.agents.create("twin")
    w = ChatWidget("sam", client=client)
    assert w.footers == []
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    # the same turn through the API on an identical agent: the deterministic model spends the same tokens
    r = client.agents.messages.create("twin", "My name is Ada.")
    reply = bubbles(w)[-1]
    assert reply.stats is not None and bubbles(w)[0].stats is None  # a user bubble has no footer
    assert (reply.stats.prompt_tokens, reply.stats.completion_tokens) == (r.usage.prompt_tokens,
                                                                          r.usage.completion_tokens)
    assert reply.stats.steps == len(r.steps) == 2  # core_memory_append, then send_message
    assert reply.stats.latency_ms > 0
    assert w.footers == [reply.footer] and reply.footer.startswith(f"{r.usage.total_tokens:,} tokens (")
    assert reply.footer.endswith(" · 2 steps")
    assert reply.widget.outputs[2]["data"]["text/html"] == f"<div class='letta-footer'>{reply.footer}</div>"
    # the footer came with the reply's last update, from the worker thread
    last, thread = updates_of(reply.widget, "outputs")[-1]
    assert last[2]["data"]["text/plain"] == reply.footer and thread == "letta_nb-chat"


def test_retry_sends_the_last_message_again_and_keeps_the_earlier_exchange(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    assert w.retry() is False  # nothing to retry yet
    assert w.send("Hi!") and w.wait(timeout=60)
    first_reply = w.messages[-1]
    w.retry_button.click()
    assert w.wait(timeout=60)
    assert [m[0] for m in w.messages] == ["user", "assistant", "user", "assistant"]
    assert w.messages[2] == ("user", "Hi!") and w.messages[1] == first_reply
    old_user, old_reply, new_user, new_reply = bubbles(w)
    assert old_user.superseded and old_reply.superseded and not new_user.superseded and not new_reply.superseded
    assert "letta-superseded" in old_user.widget._dom_classes and old_user.note == RETRIED
    assert "stays in recall memory" in old_user.widget.outputs[0]["data"]["text/html"]
    # nothing deleted: recall memory holds both exchanges, in order
    said = [m.text for m in client.agents.messages.list("sam") if m.message_type == "user_message"]
    assert said == ["Hi!", "Hi!"]


def test_edit_resends_new_text_and_says_the_earlier_exchange_stays(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    assert w.edit_last("My name is Bob.") is False  # nothing to edit yet
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    # the Edit button puts the last message in the box; Send then resends it, edited
    w.edit_button.click()
    assert w.editing and w.input.value == "My name is Ada." and w.edit_button.description == "Cancel edit"
    assert "earlier exchange stays in recall memory" in w.status_line.value
    w.edit_button.click()  # changed my mind: back to a new message
    assert not w.editing and w.input.value == "" and w.status == ""
    w.edit_button.click()
    w.input.value = "My name is Grace."
    w.send_button.click()
    assert w.wait(timeout=60) and not w.editing
    assert w.messages[-2:] == [("user", "My name is Grace."), ("assistant",
                                                              ADA.replace("Ada", "Grace"))]
    assert bubbles(w)[0].superseded and bubbles(w)[0].note == EDITED and bubbles(w)[-2].note == "edited"
    assert all("letta-superseded" in s.widget._dom_classes for s in w.steps[:1])  # its tool step dimmed too
    # from Python: edit_last does the same in one call
    assert w.edit_last("My name is Ada Lovelace.") and w.wait(timeout=60)
    said = [m.text for m in client.agents.messages.list("sam") if m.message_type == "user_message"]
    assert said == ["My name is Ada.", "My name is Grace.", "My name is Ada Lovelace."]  # all kept, in order
    assert "Name: Grace" in client.agents.blocks.retrieve("sam", "human").value


def test_retry_and_edit_wait_for_the_running_turn(client: letta_nb.Client) -> None:
    client.agents.create("slow", model="offline?latency_ms=300&tps=20")
    w = ChatWidget("slow", client=client)
    assert w.send("Hi!")
    assert w.busy and w.retry_button.disabled and w.edit_button.disabled and w.agent_picker.disabled
    assert w.retry() is False and w.edit_last("Hello?") is False
    w.stop()
    assert w.wait(timeout=60)
    assert not w.retry_button.disabled and not w.agent_picker.disabled
    assert [m[0] for m in w.messages] == ["user", "assistant"]


def test_the_agent_picker_switches_history_memory_and_gauge(client: letta_nb.Client) -> None:
    client.agents.create("ada", memory_blocks=[{"label": "persona", "value": "Ada's assistant."},
                                              {"label": "human", "value": ""}])
    client.agents.create("bob", memory_blocks=[{"label": "persona", "value": "Bob's assistant, " + "very " * 300},
                                              {"label": "human", "value": ""}])
    client.agents.messages.create("bob", "Remember that the MemGPT paper pages memory.")
    w = ChatWidget("ada", client=client)
    assert list(w.agent_picker.options) == ["ada", "bob"] and w.agent_picker.value == "ada"
    ada_tokens = w.context_tokens
    assert "Ada&#x27;s assistant." in w.memory_panel.value or "Ada's assistant." in w.memory_panel.value
    w.agent_picker.value = "bob"
    assert w.agent.name == "bob" and "Message bob…" in w.input.placeholder
    assert w.messages[0] == ("user", "Remember that the MemGPT paper pages memory.") and len(w.steps) == 1
    assert "Bob" in w.memory_panel.value and "Ada" not in w.memory_panel.value
    assert w.context_tokens == client.agents.context("bob").total > ada_tokens  # the longer persona
    assert bubbles(w)[-1].name == "bob"
    # the panel now follows bob's memory (and no longer ada's)
    client.agents.blocks.update("bob", "human", value="Prefers tea.")
    wait_until(lambda: "Prefers tea." in w.memory_panel.value, "the panel to follow bob", timeout=30)
    client.agents.blocks.update("ada", "human", value="Prefers coffee.")
    client.agents.blocks.update("bob", "human", value="Prefers milk.")  # a later notice, after ada's
    wait_until(lambda: "Prefers milk." in w.memory_panel.value, "the panel to follow bob again", timeout=30)
    assert "coffee" not in w.memory_panel.value
    # a new agent becomes a choice after the next turn; a turn goes to the picked agent
    client.agents.create("cy")
    assert w.send("My name is Ada.") and w.wait(timeout=60)
    assert "cy" in w.agent_picker.options
    said = {name: [m.text for m in client.agents.messages.list(name) if m.message_type == "user_message"]
            for name in ("ada", "bob")}
    assert said == {"ada": [], "bob": ["Remember that the MemGPT paper pages memory.", "My name is Ada."]}


def test_the_picker_does_not_switch_during_a_turn(client: letta_nb.Client) -> None:
    client.agents.create("slow", model="offline?latency_ms=300&tps=20")
    client.agents.create("other")
    w = ChatWidget("slow", client=client)
    assert w.send("Hi!")
    w.agent_picker.value = "other"  # a script can set a disabled Dropdown: refused, the value goes back
    assert w.agent.name == "slow" and w.agent_picker.value == "slow"
    assert w.switch("other") is False
    assert w.wait(timeout=60)
    assert w.switch("other") and w.agent_picker.value == "other" and w.messages == []


def test_the_context_gauge_is_reread_after_each_turn(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    w = ChatWidget("sam", client=client)
    before = client.agents.context("sam")
    assert (w.context_tokens, w.context_window) == (before.total, before.context_window) and before.total > 0
    opened = len(updates_of(w.head.gauge, "value"))
    assert w.send("Remember that the MemGPT paper pages memory like an OS.") and w.wait(timeout=60)
    after = client.agents.context("sam")
    assert w.context_tokens == after.total > before.total  # the exchange is in the window now
    gauge = w.head.gauge.value
    assert f"{after.total:,} of {after.context_window:,} tokens" in gauge
    assert f"width:{after.used:.1%}" in gauge and "letta-gauge-low" in gauge
    # one synced update of the gauge per turn, not one per token
    assert len(updates_of(w.head.gauge, "value")) == opened + 1
