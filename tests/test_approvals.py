"""Human approval of tool calls (runtime/approvals.py), against real stores, real processes and the offline model.

A tool that asks for approval pauses the turn (stop reason ``requires_approval``, an ApprovalRequestEvent, the
call kept in the store); ``messages.approve`` (or letta_client's approval message) resumes it: approved, the
tool runs once; denied, it never runs and the model reads the reason. Side effects are appended to a file, so
"ran once" is counted, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import letta_nb
from letta_nb.runtime import approvals
from tests.agent_helpers import call, record_prompts


def touch(path: str, word: str = "ran") -> str:
    """Append a word to a file.

    Args:
        path: The file.
        word: What to append.
    """
    with open(path, "a") as f:
        f.write(word + "\n")
    return f"wrote {word}"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def paused(client: letta_nb.Client, agent: str, path: Path, **args: Any) -> letta_nb.Response:
    before = lines(path)
    r = client.agents.messages.create(agent, call("touch", path=str(path), **args))
    assert r.stop_reason == "requires_approval"
    assert [c.name for c in r.pending_approvals] == ["touch"]
    assert lines(path) == before  # asked, not run
    return r


@pytest.fixture
def agent(client: letta_nb.Client) -> str:
    client.tools.upsert_from_function(touch, requires_approval=True)
    client.agents.create("ann", model="offline", tools=["touch"])
    return "ann"


def test_a_call_waits_then_runs_once_when_approved(client: letta_nb.Client, agent: str, tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    events = list(client.agents.messages.stream(agent, call("touch", path=str(out))))
    asks = [e for e in events if isinstance(e, letta_nb.ApprovalRequestEvent)]
    assert [(e.name, json.loads(e.arguments)) for e in asks] == [("touch", {"path": str(out)})]
    assert events[-1].stop_reason == "requires_approval"
    assert lines(out) == []
    stored = client.agents.messages.list(agent)
    assert [(m.role, m.status) for m in stored] == [("user", None), ("assistant", approvals.ASKED)]
    assert stored[-1].tool_calls[0].id == asks[0].call_id  # the call itself is committed with its step

    r = client.agents.messages.approve(agent, asks[0].call_id)
    assert r.stop_reason == "end_turn" and r.pending_approvals == []
    assert lines(out) == ["ran"]
    assert r.messages[0].role == "tool" and r.messages[0].tool_call_id == asks[0].call_id
    assert r.messages[0].content == "wrote ran" and r.messages[0].status == "success"
    assert "wrote ran" in r.text  # the model read the result and replied
    with pytest.raises(letta_nb.ApprovalError, match="already answered"):
        client.agents.messages.approve(agent, asks[0].call_id)
    msgs = client.agents.messages.list(agent)
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
    assert [m.tool_call_id for m in msgs if m.name == "touch"] == [asks[0].call_id]
    assert lines(out) == ["ran"]
    client.agents.messages.create(agent, "Hello again.")  # nothing waits any more: messages go through


def test_denied_call_never_runs_and_the_model_reads_the_reason(client: letta_nb.Client, tmp_path: Path) -> None:
    recorder = record_prompts(client)
    client.tools.upsert_from_function(touch, requires_approval=True)
    client.agents.create("ann", model="offline", tools=["touch"])
    out = tmp_path / "side.txt"
    r = paused(client, "ann", out)
    asked = len(recorder.prompts)
    r2 = client.agents.messages.approve("ann", r.pending_approvals[0].id, approve=False, reason="not that file")
    assert lines(out) == []
    assert r2.stop_reason == "end_turn"
    denial = r2.messages[0]
    assert (denial.role, denial.status, denial.name) == ("tool", "error", "touch")
    assert denial.content == "Error: request to call tool denied. User reason: not that file"
    prompt = recorder.prompts[asked][0]  # the model call after the answer
    assert prompt[-1] == {"role": "tool", "tool_call_id": r.pending_approvals[0].id, "content": denial.content}
    assert lines(out) == []


def test_a_requires_approval_rule_makes_any_tool_wait(client: letta_nb.Client, tmp_path: Path) -> None:
    client.tools.upsert_from_function(touch)  # no flag on the tool itself
    client.agents.create("ann", model="offline", tools=["touch"],
                         tool_rules=[{"type": "requires_approval", "tool_name": "touch"}])
    out = tmp_path / "side.txt"
    r = paused(client, "ann", out)
    client.agents.messages.approve("ann", r.pending_approvals[0].id, approve=True)
    assert lines(out) == ["ran"]
    client.agents.create("bob", model="offline", tools=["touch"])  # no rule, no flag: runs at once
    assert client.agents.messages.create("bob", call("touch", path=str(out))).stop_reason == "end_turn"
    assert lines(out) == ["ran", "ran"]


def test_an_approved_call_is_checked_against_the_rules_again(client: letta_nb.Client, agent: str,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    r = paused(client, agent, out)
    # meanwhile the rules changed: touch may now only follow archival_memory_search (Letta 0.16.8 would run it)
    client.agents.update(agent, tool_rules=[{"type": "parent_last_tool", "tool_name": "archival_memory_search",
                                             "children": ["touch"]}])
    r2 = client.agents.messages.approve(agent, r.pending_approvals[0].id)
    assert lines(out) == []
    refusal = r2.messages[0]
    assert (refusal.role, refusal.name, refusal.status) == ("tool", "touch", "error")
    assert "touch was not run" in refusal.content and "archival_memory_search" in refusal.content


def test_a_new_message_while_a_call_waits_is_refused_and_changes_nothing(client: letta_nb.Client, agent: str,
                                                                          tmp_path: Path) -> None:
    r = paused(client, agent, tmp_path / "side.txt")
    before = client.agents.messages.list(agent)
    with pytest.raises(letta_nb.PendingApprovalError, match=r"approve\('ann', 'call_") as info:
        client.agents.messages.create(agent, "What now?")
    assert info.value.pending == r.pending_approvals
    assert client.agents.messages.list(agent) == before


def test_bad_answers_are_clear_errors_and_run_nothing(client: letta_nb.Client, agent: str, tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    with pytest.raises(letta_nb.ApprovalError, match="no call of this agent waits"):
        client.agents.messages.approve(agent, "call_nope")
    r = paused(client, agent, out)
    with pytest.raises(letta_nb.ApprovalError, match=r"'call_nope' .* is not a call .* waiting: touch \(call_"):
        client.agents.messages.approve(agent, "call_nope")
    with pytest.raises(letta_nb.InvalidArgumentError, match="approve'] must be True or False"):
        client.agents.messages.approve(agent, r.pending_approvals[0].id, "yes")  # type: ignore[arg-type]
    with pytest.raises(letta_nb.InvalidArgumentError, match="not mixed with user messages"):
        client.agents.messages.create(agent, messages=[{"role": "user", "content": "hi"},
                                                       {"type": "approval", "tool_call_id": "x", "approve": True}])
    assert lines(out) == []
    assert client.agents.messages.approve(agent, r.pending_approvals[0].id).stop_reason == "end_turn"
    assert lines(out) == ["ran"]


def test_letta_client_approval_message_forms(client: letta_nb.Client, agent: str, tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    paused(client, agent, out, word="one")
    asking = client.agents.messages.list(agent)[-1]  # Letta's approval_request_id: the asking message's id
    r = client.agents.messages.create(agent, messages=[{"type": "approval", "approve": True,
                                                        "approval_request_id": asking.id}])
    assert r.stop_reason == "end_turn" and lines(out) == ["one"]
    r = paused(client, agent, out, word="two")
    r2 = client.agents.messages.create(agent, messages=[{"type": "approval", "approvals": [
        {"type": "approval", "tool_call_id": r.pending_approvals[0].id, "approve": False, "reason": "enough"}]}])
    assert r2.messages[0].content.endswith("User reason: enough") and lines(out) == ["one"]


def test_async_twin_answers_too(client: letta_nb.Client, agent: str, tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    r = paused(client, agent, out)
    r2 = asyncio.run(client.agents.messages.aapprove(agent, r.pending_approvals[0].id, True))
    assert r2.stop_reason == "end_turn" and lines(out) == ["ran"]


def test_the_flag_survives_reopening_and_old_signatures_still_verify(db_path: Any) -> None:
    with letta_nb.connect(db_path) as c:
        c.tools.upsert_from_function(touch, requires_approval=True)

        def plain(x: int) -> int:
            """Double x."""
            return 2 * x

        c.tools.upsert_from_function(plain)
    with letta_nb.connect(db_path) as c:
        asks, runs = c.tools.retrieve("touch"), c.tools.retrieve("plain")
        assert asks.requires_approval is True and asks.sandbox is False  # still this user's: trusted as stored
        assert runs.requires_approval is False and runs.sandbox is False


def test_imported_custom_tools_ask_first(client: letta_nb.Client, tmp_path: Path) -> None:
    from letta_nb.agentfile._tools import plan_tool

    plan = plan_tool({"name": "shout", "tool_type": "custom", "source_code": "def shout(t: str) -> str:\n"
                      "    return t.upper()\n", "json_schema": {"parameters": {"type": "object"}}}, "tools[0]")
    assert plan.kind == "custom" and plan.record is not None and plan.record.requires_approval is True
    stub = plan_tool({"name": "web_search", "tool_type": "letta_builtin"}, "tools[1]")
    assert stub.record is not None and stub.record.requires_approval is False


_CHILD = textwrap.dedent('''
    import os, sys, time
    import letta_nb
    store, out = sys.argv[1], sys.argv[2]
    c = letta_nb.connect(store, lease_ttl=1.0)

    def touch(path: str, word: str = "ran") -> str:
        """Append a word to a file."""
        with open(path, "a") as f:
            f.write(word + "\\n")
        return "wrote " + word

    c.tools.upsert_from_function(touch, requires_approval=True)
    c.agents.create("ann", model="offline", tools=["touch"])
    r = c.agents.messages.create("ann", "/call touch " + '{"path": "%s"}' % out)
    print("WAITING", r.stop_reason, r.pending_approvals[0].id, flush=True)
    while True:
        time.sleep(60)  # killed here, the call waiting
''')


def test_killed_while_a_call_waits_then_approved_in_a_new_process_completes_once(db_path: Any,
                                                                                 tmp_path: Path) -> None:
    if not isinstance(db_path, Path):
        pytest.skip("the child opens a SQLite file")
    out, script = tmp_path / "side.txt", tmp_path / "child.py"
    script.write_text(_CHILD)  # a file, so the tool's source is stored and the next process can run it
    child = subprocess.Popen([sys.executable, str(script), str(db_path), str(out)], stdout=subprocess.PIPE,
                             text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.startswith("WAITING requires_approval call_"), line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    call_id = line.split()[-1]
    with letta_nb.connect(db_path) as c:  # a new process's view: the store alone says what waits
        before = c.agents.messages.list("ann")
        assert approvals.pending(before)[0].id == call_id
        with pytest.raises(letta_nb.PendingApprovalError):
            c.agents.messages.create("ann", "hello?")
        r = c.agents.messages.approve("ann", call_id)
        assert r.stop_reason == "end_turn"
        with pytest.raises(letta_nb.ApprovalError, match="already answered"):
            c.agents.messages.approve("ann", call_id)
        msgs = c.agents.messages.list("ann")
    assert lines(out) == ["ran"]
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
    assert msgs[:len(before)] == before  # nothing before the answer was rewritten or repeated
    assert [m.role for m in msgs].count("user") == 1
    assert [m.tool_call_id for m in msgs if m.name == "touch"] == [call_id]


# ---- notebook: %letta tool add --approve, %%letta's box and its text fallback, %letta approve ---------------
def test_magics_ask_show_the_command_and_answer(shell: InteractiveShell, tmp_path: Path) -> None:
    from letta_nb.notebook._approval_view import ApprovalBox

    out = tmp_path / "side.txt"
    shell.user_ns["touch"] = touch
    with capture_output():
        shell.run_line_magic("letta", "create ann")
        shell.run_line_magic("letta", "tool add touch --approve")
    assert shell.run_line_magic("letta", "tools").set_index("name").loc["touch", "attached"]
    with capture_output() as cap:
        shell.run_cell_magic("letta", "ann -o r", call("touch", path=str(out)))
    r = shell.user_ns["r"]
    call_id = r.pending_approvals[0].id
    assert r.stop_reason == "requires_approval" and lines(out) == []
    final = cap.outputs[-2].data["text/plain"]  # the reply's last update: the command to type, no widgets needed
    assert f"%letta approve {call_id} --agent ann" in final and "--deny" in final
    box = cap.outputs[-1]
    assert box.data["text/plain"].startswith("⏸ touch(")  # where widgets do not render: the same text
    assert "application/vnd.jupyter.widget-view+json" in box.data
    with capture_output():
        denied = shell.run_line_magic("letta", f'approve {call_id} --deny --reason "no thanks"')
    assert denied.messages[0].content.endswith("User reason: no thanks") and lines(out) == []

    with capture_output():
        shell.run_cell_magic("letta", "ann -o r2", call("touch", path=str(out)))
    widget = ApprovalBox(current_client(), "ann", shell.user_ns["r2"].pending_approvals)
    view = next(iter(widget.views.values()))
    assert json.loads(view.arguments) == {"path": str(out)}
    view.approve_button.click()
    view.approve_button.click()  # a second click is no second answer
    widget.wait(30)
    assert lines(out) == ["ran"]
    assert "wrote ran" in widget.result.value and view.approve_button.disabled


def current_client() -> letta_nb.Client:
    from letta_nb.notebook import current_session

    return current_session().client


def test_widget_shows_the_call_and_its_buttons_answer_it(client: letta_nb.Client, agent: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import comm

    from letta_nb.notebook.widget import ChatWidget

    monkeypatch.setattr(comm, "create_comm", lambda **kw: _Comm())
    out = tmp_path / "side.txt"
    w = ChatWidget(agent, client=client)
    assert w.send(call("touch", path=str(out))) and w.wait(30)
    assert w.status == "waiting for your approval" and list(w.approvals) and lines(out) == []
    view = next(iter(w.approvals.values()))
    assert json.loads(view.arguments) == {"path": str(out)}
    view.reason.value = "keep it clean"
    view.deny_button.click()
    assert w.wait(30)
    assert lines(out) == [] and "denied" in view.outcome.value and "keep it clean" in view.outcome.value
    assert w.steps[-1].status == "error"

    assert w.send(call("touch", path=str(out))) and w.wait(30)
    reopened = ChatWidget(agent, client=client)  # the waiting call comes back from the store
    view = next(iter(reopened.approvals.values()))
    view.approve_button.click()
    assert reopened.wait(30)
    assert lines(out) == ["ran"] and "approved" in view.outcome.value


class _Comm:
    kernel = "recording"

    def __init__(self) -> None:
        self.comm_id = os.urandom(8).hex()

    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_approval_is_answered_once_when_two_answers_race(client: letta_nb.Client, agent: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "side.txt"
    r = paused(client, agent, out)
    call_id = r.pending_approvals[0].id

    async def both() -> list[Any]:
        return await asyncio.gather(client.agents.messages.aapprove(agent, call_id),
                                    client.agents.messages.aapprove(agent, call_id), return_exceptions=True)

    results = asyncio.run(both())
    assert sorted(type(x).__name__ for x in results) == ["ApprovalError", "Response"]
    assert lines(out) == ["ran"]
    touched = [m for m in client.agents.messages.list(agent) if m.name == "touch"]
    assert [m.tool_call_id for m in touched] == [call_id]
