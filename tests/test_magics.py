"""The %letta / %%letta magics, run in a real IPython ``InteractiveShell`` against a real store file.

Each test gets its own LETTA_NB_HOME (conftest) and its own shell with the extension loaded; the shell's
display output is captured the way a notebook receives it (``capture_output``). Every subcommand's bad
input is checked for the message the user sees (a ``UsageError``: no traceback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

import letta_nb
from letta_nb.notebook import _commands, current_session
from letta_nb.notebook._live_reply import LiveReply


def letta(sh: InteractiveShell, line: str) -> Any:
    return sh.run_line_magic("letta", line)


def cell(sh: InteractiveShell, line: str, body: str) -> list[Any]:
    """Run %%letta; return the display outputs it published (the stream's updates, last one final)."""
    with capture_output() as cap:
        sh.run_cell_magic("letta", line, body)
    return cap.outputs


def usage_error(sh: InteractiveShell, line: str) -> str:
    with pytest.raises(UsageError) as info:
        letta(sh, line)
    return str(info.value)


# ---- loading --------------------------------------------------------------------------------------------


def test_import_letta_nb_imports_no_ipython_widgets_or_pandas() -> None:
    code = ("import sys, letta_nb; bad = [m for m in ('IPython', 'ipywidgets', 'pandas', 'matplotlib', "
            "'llama_index') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_load_ext_announces_the_store_and_registers_both_magics(tmp_path: Path, letta_home: Path) -> None:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    try:
        with capture_output() as cap:
            sh.run_line_magic("load_ext", "letta_nb")
        assert f"store {letta_home / 'letta_nb.db'}" in cap.stdout
        assert "letta" in sh.magics_manager.magics["line"]
        assert "letta" in sh.magics_manager.magics["cell"]
    finally:
        sh.run_line_magic("unload_ext", "letta_nb")
        InteractiveShell.clear_instance()


def test_help_documents_every_subcommand_and_its_options(shell: InteractiveShell) -> None:
    doc = shell.find_line_magic("letta").__doc__
    for name in _commands.COMMANDS:
        assert f"%letta {name}" in doc
    for option in ("--persona", "--human", "--model", "--embedding", "--parallel", "--top-k", "--agent", "--replace"):
        assert option in doc
    cell_doc = shell.find_cell_magic("letta").__doc__
    assert "%%letta" in cell_doc and "-o VAR" in cell_doc and "{md,text,json}" in cell_doc


def test_unload_removes_magics_and_closes_the_client_and_reload_keeps_the_data(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    client = current_session().client
    shell.run_line_magic("unload_ext", "letta_nb")
    assert "letta" not in shell.magics_manager.magics["line"]
    assert "letta" not in shell.magics_manager.magics["cell"]
    assert "LettaCommandMagics" not in shell.magics_manager.registry
    assert current_session(create=False) is None
    assert client._thread.closed
    with pytest.raises(letta_nb.RuntimeClosedError):
        client.agents.list()
    with capture_output():
        shell.run_line_magic("load_ext", "letta_nb")
        shell.run_line_magic("reload_ext", "letta_nb")
    assert list(letta(shell, "agents")["name"]) == ["sam"]
    assert current_session().agent is None  # a fresh session: nothing is current until `use`


# ---- agents --------------------------------------------------------------------------------------------


def test_create_use_agents_and_delete(shell: InteractiveShell) -> None:
    notice = letta(shell, 'create sam --persona "A concise research assistant." --human "Name: Ada"')
    assert "'sam' created" in repr(notice)
    letta(shell, "create bob --model 'offline?latency_ms=1'")
    frame = letta(shell, "agents")
    assert sorted(frame["name"]) == ["bob", "sam"]
    assert frame.set_index("name").loc["bob", "current"]
    assert frame.set_index("name").loc["bob", "model"] == "offline?latency_ms=1"
    sam = current_session().client.agents.retrieve("sam")
    assert sam.block("persona").value == "A concise research assistant."  # quotes removed, words kept
    assert sam.block("human").value == "Name: Ada"
    letta(shell, "use sam")
    assert current_session().agent == "sam"
    letta(shell, "delete sam")
    assert current_session().agent is None
    assert list(letta(shell, "agents")["name"]) == ["bob"]


def test_create_replace_starts_over(shell: InteractiveShell) -> None:
    letta(shell, "create sam --human 'old'")
    assert "already" in usage_error(shell, "create sam")
    letta(shell, "create sam --replace --human 'new'")
    assert current_session().client.agents.retrieve("sam").block("human").value == "new"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "%letta needs a subcommand, one of: agents, create"),
        ("frob", "Unknown %letta subcommand 'frob'"),
        ("agent", "Did you mean 'agents'?"),
        ("agents extra", "%letta agents: unrecognized arguments: extra"),
        ("create", "%letta create: the following arguments are required: name. Usage: %letta create"),
        ("create 'bad/name'", "name must be 1-200 characters"),
        ("create sam --model nope", "No model named 'nope'"),
        ("create sam --embedding nope", "embedding='nope' is not available"),
        ("create 'unclosed", "No closing quotation"),
        ("use", "the following arguments are required: name"),
        ("use nobody", "No agent named 'nobody'"),
        ("delete nobody", "No agent named 'nobody'"),
        ("memory", "No agent selected. Create one with `%letta create NAME`"),
        ("memory set human", "%letta memory set: the following arguments are required: value"),
        ("memory set human Ada", "No agent selected"),
        ("archival", "%letta archival needs one of: insert, search; got nothing"),
        ("archival frob", "%letta archival needs one of: insert, search; got 'frob'"),
        ("archival insert", "the following arguments are required: text"),
        ("archival search", "the following arguments are required: query"),
        ("archival search x -k nope", "argument -k/--top-k: invalid int value: 'nope'"),
        ("tool", "%letta tool needs one of: add"),
        ("tool add", "the following arguments are required: func"),
        ("tool add nothing_here", "No function named 'nothing_here' in the notebook namespace"),
        ("load", "the following arguments are required: PATH"),
        ("load /no/such/file", "No such file or directory: '/no/such/file'"),
        ("stats", "the following arguments are required: kind"),
        ("stats frob", "invalid choice: 'frob' (choose from 'pool', 'cache', 'tools'"),
        ("models extra", "unrecognized arguments: extra"),
        ("config colour red", "invalid choice: 'colour' (choose from 'model', 'embedding')"),
        ("config model", "%letta config model needs a value"),
        ("config model nope", "No model named 'nope'"),
        ("config embedding nope", "embedding='nope' is not available"),
        ("chat", "No agent selected"),
        ("chat nobody", "No agent named 'nobody'"),
    ],
)
def test_bad_input_without_an_agent_says_what_to_do(shell: InteractiveShell, line: str, message: str) -> None:
    assert message in usage_error(shell, line)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("memory nobody", "No agent named 'nobody'. Known agents: 'sam'"),
        ("memory set nope value", "No memory block named 'nope'. Known memory blocks: 'human', 'persona'"),
        ("memory set human " + "x" * 5001, "would hold 5001 characters, over its limit of 5000"),
        ("archival search x -k 0", "-k must be a positive number of passages, got 0"),
        ("archival insert text --agent nobody", "No agent named 'nobody'"),
        ("tool add not_callable", "'not_callable' is a int, not a function"),
        ("tool add send_message_like --timeout 0", "--timeout must be a positive number of seconds, got 0.0"),
        ("tool add takes_a_set", "set"),
        ("tool add send_message_like --network", "--network applies to sandboxed tools"),
        ("tools --agent nobody", "No agent named 'nobody'"),
    ],
)
def test_bad_input_with_an_agent(shell: InteractiveShell, line: str, message: str) -> None:
    letta(shell, "create sam")
    shell.user_ns["not_callable"] = 3

    def send_message_like(text: str) -> str:
        """Echo.

        Args:
            text: The text.
        """
        return text

    def takes_a_set(items: set) -> int:
        """Sets are not JSON."""
        return len(items)

    shell.user_ns.update(send_message_like=send_message_like, takes_a_set=takes_a_set)
    assert message in usage_error(shell, line)


# ---- memory, archival, tools ----------------------------------------------------------------------------


def test_memory_show_and_set(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    letta(shell, 'memory set human "Name: Ada <b>"')
    view = letta(shell, "memory")
    assert view["human"].value == "Name: Ada <b>"
    html = view._repr_html_()
    assert "Name: Ada &lt;b&gt;" in html and "<b>human</b>" in html
    assert "[human] (13/5000) Name: Ada <b>" in repr(view)
    letta(shell, "memory set persona A terse bot")  # several words without quotes
    assert letta(shell, "memory sam")["persona"].value == "A terse bot"


def test_archival_insert_and_search_returns_a_dataframe(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    letta(shell, 'archival insert "The MemGPT paper pages memory like an OS." --tags papers,os')
    letta(shell, "archival insert Bananas are yellow.")
    frame = letta(shell, "archival search memory paging -k 1")
    assert list(frame.columns) == ["score", "text", "tags", "created_at", "id"]
    assert len(frame) == 1
    assert frame.loc[0, "text"] == "The MemGPT paper pages memory like an OS."
    assert frame.loc[0, "tags"] == "os, papers" or frame.loc[0, "tags"] == "papers, os"


def test_tool_add_registers_a_notebook_function_the_agent_can_call(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    shell.run_cell('def word_count(text: str) -> int:\n    """Count words.\n\n    Args:\n        text: The text.\n'
                   '    """\n    return len(text.split())\n')
    assert "'word_count' registered and attached to 'sam'" in repr(letta(shell, "tool add word_count --parallel"))
    letta(shell, "tool add word_count --parallel")  # re-adding (after editing the function) is fine
    frame = letta(shell, "tools").set_index("name")
    assert frame.loc["word_count", "kind"] == "user" and frame.loc["word_count", "attached"]
    assert frame.loc["send_message", "kind"] == "base"
    cell(shell, "-o r", '/call word_count {"text": "one two three"}')
    assert "word_count returned: 3" in shell.user_ns["r"].text
    letta(shell, "tool add word_count --strict --network")
    spec = current_session().client.tools.retrieve("word_count")
    assert (spec.sandbox, spec.network) == ("strict", True)


# ---- %%letta ----------------------------------------------------------------------------------------------


def test_cell_streams_interpolates_and_stores_the_response(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    shell.user_ns["who"] = "Ada"
    outputs = cell(shell, "sam -o r", "My name is {who}. Braces stay: {{x}} and {'json': 1}")
    final = outputs[-1].data
    assert "⚙ core_memory_append(label='human', content='Name: Ada') → success" in final["text/plain"]
    assert 'Got it - I saved "Name: Ada"' in final["text/markdown"]
    assert len(outputs) >= 2  # a first frame, then updates as the reply arrived
    r = shell.user_ns["r"]
    assert isinstance(r, letta_nb.Response)
    assert r.messages[0].content == "My name is Ada. Braces stay: {x} and {'json': 1}"
    assert r.text == 'Got it - I saved "Name: Ada" to my core memory (human).'
    assert r.stop_reason == "end_turn" and len(r.steps) == 2 and r.usage.total_tokens > 0
    assert "Name: Ada" in letta(shell, "memory")["human"].value
    assert "user_message" in r._repr_html_()


def test_cell_formats(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    text = cell(shell, "--format text", "Hi!")[-1].data
    assert set(text) == {"text/plain"} and "offline model" in text["text/plain"]
    js = cell(shell, "--format json", "What is my name?")[-1].data["application/json"]
    assert js["agent"] == "sam" and js["status"] == "done" and js["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("line", "body", "message"),
    [
        ("", "hello", "No agent selected"),
        ("nobody", "hello", "No agent named 'nobody'"),
        ("sam", "   \n", "%%letta needs a message in the cell body"),
        ("sam", "About {missing_var}.", "no variable 'missing_var' is defined in the notebook"),
        ("sam", "About {who.nope}.", "str object has no attribute 'nope'"),
        ("sam -o 1bad", "hello", "-o needs a Python variable name, got '1bad'"),
        ("sam --format xml", "hello", "invalid choice: 'xml' (choose from 'md', 'text', 'json')"),
        ("sam extra", "hello", "unrecognized arguments: extra"),
    ],
)
def test_cell_bad_input(shell: InteractiveShell, line: str, body: str, message: str) -> None:
    if line:  # the first case needs no agent at all
        letta(shell, "create sam")
    current_session().agent = None  # so a missing AGENT argument cannot fall back to the current agent
    shell.user_ns["who"] = "Ada"
    with pytest.raises(UsageError) as info:
        cell(shell, line, body)
    assert message in str(info.value)


def test_cell_shows_a_plain_content_reply_live(shell: InteractiveShell, monkeypatch) -> None:
    # the reported bug: an agent without send_message answers in plain content, which streamed as reasoning
    # and showed nothing until the widget was reopened
    current_session().client.agents.create("bare", include_base_tools=False)
    monkeypatch.setattr(LiveReply, "due", lambda self: True)  # every event renders: frames need no timing
    outputs = cell(shell, "bare -o r", "Hi!")
    reply = shell.user_ns["r"].text
    assert reply.startswith("Hello! I'm letta_nb's offline model")
    frames = [o.data["text/plain"] for o in outputs[1:-1]]  # between the first frame and the final one
    growing = [f for f in frames if f and f != "…"]
    assert len(growing) > 3 and all(reply.startswith(f) for f in growing)  # the reply, word by word, live
    assert outputs[-1].data["text/plain"] == reply and "💭" not in outputs[-1].data["text/markdown"]


def test_cell_shows_reasoning_only_on_request(shell: InteractiveShell) -> None:
    letta(shell, "create think --model 'offline?reasoning=field'")
    plain = cell(shell, "think", "My name is Ada.")[-1].data
    assert "The user told me their name" not in plain["text/plain"] + plain["text/markdown"]
    assert 'Got it - I saved "Name: Ada"' in plain["text/plain"]
    shown = cell(shell, "think --reasoning", "What is my name?")[-1].data
    assert shown["text/plain"].startswith("💭 The user asked a question")
    assert "letta-reasoning" in shown["text/markdown"] and "Ada" in shown["text/plain"].splitlines()[-1]
    js = cell(shell, "think --reasoning --format json", "What is my name?")[-1].data["application/json"]
    assert js["reasoning"].startswith("The user asked a question") and "Ada" in js["text"]


def test_ctrl_c_stops_the_reply_and_keeps_the_partial_answer(shell: InteractiveShell, monkeypatch) -> None:
    letta(shell, "create slow --model 'offline?tps=50'")
    feed = LiveReply.feed

    def feed_then_interrupt(self: LiveReply, event: Any) -> None:
        feed(self, event)
        if event.message_type == "assistant_message" and len(self.text) > 20 and self.status == "streaming":
            os.kill(os.getpid(), signal.SIGINT)  # what a kernel interrupt delivers to the cell's thread

    monkeypatch.setattr(LiveReply, "feed", feed_then_interrupt)
    outputs = cell(shell, "-o r", "Hi!")
    final = outputs[-1].data["text/plain"]
    assert "[cancelled: the partial answer above was kept]" in final
    r = shell.user_ns["r"]
    assert r.stop_reason == "cancelled"
    kept = [m for m in r.messages if m.message_type == "assistant_message"]
    assert len(kept) == 1 and kept[0].status == "cancelled"
    full = "Hello! I'm letta_nb's offline model: deterministic and needing no API key."
    assert len(kept[0].text) > 20 and full.startswith(kept[0].text[:40]) and len(kept[0].text) < 150
    assert final.startswith(kept[0].text[:20])
    # the agent is usable again straight away
    assert "Name: Ada" in cell(shell, "", "My name is Ada.")[-1].data["text/plain"]


# ---- stats, models, config, load, chat -------------------------------------------------------------------


def test_stats_return_dataframes(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    cell(shell, "", "My name is Ada.")
    steps = letta(shell, "stats steps")
    assert len(steps) == 2 and "total_ms" in steps.columns
    tools = letta(shell, "stats tools")
    assert list(tools["tool"]) == ["core_memory_append", "send_message"]
    cache = letta(shell, "stats cache")
    assert "agent_state" in set(cache["cache"])
    for kind in ("pool", "locks", "embedder", "spans", "metrics"):
        assert hasattr(letta(shell, f"stats {kind}"), "columns"), kind


def test_models_and_config(shell: InteractiveShell) -> None:
    models = letta(shell, "models").set_index("provider")
    assert bool(models.loc["offline", "ready"])
    config = letta(shell, "config")
    assert config.loc["default_model", "value"] == "offline"
    letta(shell, "config model 'offline?latency_ms=5'")
    letta(shell, "create sam")
    assert current_session().client.agents.retrieve("sam").model == "offline?latency_ms=5"
    assert letta(shell, "config").loc["current agent", "value"] == "sam"


def test_load_ingests_files_once(shell: InteractiveShell, tmp_path: Path) -> None:
    letta(shell, "create sam")
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nThe MemGPT paper pages memory like an operating system.\n")
    with capture_output():
        report = letta(shell, f"load {doc} --agent sam")
        again = letta(shell, f"load {doc}")
    assert list(report["status"]) == ["added"] and list(again["status"]) == ["unchanged"]
    hits = current_session().client.agents.passages.search("sam", "operating system", top_k=1)
    assert hits and "operating system" in hits[0].text


def test_chat_returns_a_widget_on_the_current_agent(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    cell(shell, "", "My name is Ada.")
    widget = letta(shell, "chat")
    assert isinstance(widget, letta_nb.ChatWidget)
    assert widget.agent.name == "sam"
    assert widget.messages[0] == ("user", "My name is Ada.")


def test_sql_returns_a_dataframe_keeps_quotes_and_refuses_writes(shell: InteractiveShell) -> None:
    letta(shell, "create sam")
    frame = letta(shell, "sql SELECT name FROM agents WHERE name = 'sam' AND \"name\" <> 'it''s'")
    assert frame.to_dict("records") == [{"name": "sam"}]  # SQL's quotes reach SQLite verbatim
    assert "read-only" in usage_error(shell, "sql DELETE FROM agents")
    assert 'near "SELEC": syntax error' in usage_error(shell, "sql SELEC 1")
    assert "needs a statement" in usage_error(shell, "sql")
    assert letta(shell, "sql SELECT count(*) AS n FROM agents")["n"].tolist() == [1]  # the delete changed nothing
