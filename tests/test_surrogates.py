"""Lone surrogates (``"\\ud800"``) wherever text enters: stored whole as U+FFFD, answered, never a crash.

A lone surrogate cannot be encoded as UTF-8, so SQLite, HTTP and the kernel's messages all refuse it.
The policy (letta_nb/_text.py): free text is repaired at the boundary -- a lone surrogate becomes U+FFFD,
a pair written as two code points becomes its character -- and names are refused instead. Each test
drives a real path (a real store file read back on a raw connection, the offline model, the loopback
server over HTTP, an in-process IPython shell) and checks what was stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import letta_nb
from letta_nb._text import clean_json, clean_text, has_surrogates
from letta_nb.errors import InvalidArgumentError
from letta_nb.testing import LoopbackServer
from tests.agent_helpers import call
from tests.store_query import query, table_counts

LONE = "\ud800"
PAIR = "\ud83d\ude00"  # U+1F600 written as two UTF-16 code units
FFFD = "\ufffd"


def stored_texts(db: Path, agent_id: str) -> list[str]:
    """Every message content of the agent, as the store file holds it (raw connection)."""
    return [r[0] for r in query(str(db), "SELECT content FROM messages WHERE agent_id = ? ORDER BY seq", agent_id)
            if r[0] is not None]


def encodable(value: object) -> bool:
    return not has_surrogates(json.dumps(value, default=str, ensure_ascii=False))


# ---- the helper ----------------------------------------------------------------------------------------


def test_clean_text_replaces_lone_surrogates_and_joins_pairs() -> None:
    assert clean_text(f"a{LONE}b") == f"a{FFFD}b"
    assert clean_text(f"x{PAIR}y") == "x\U0001f600y"
    assert clean_text("\ude00\ud83d") == FFFD * 2  # low before high is not a pair
    plain = "caf\u00e9 \U0001f600"
    assert clean_text(plain) is plain  # valid text is returned untouched, no copy
    nested = {"k": [LONE, {"v": PAIR}], LONE: 1}
    assert clean_json(nested) == {"k": [FFFD, {"v": "\U0001f600"}], FFFD: 1}
    clean = {"a": ["b", 1]}
    assert clean_json(clean) is clean


# ---- the public API -----------------------------------------------------------------------------------


def test_a_turn_with_a_lone_surrogate_is_stored_whole_and_answered(client: letta_nb.Client, db_path: Path) -> None:
    agent = client.agents.create("sam")
    r = client.agents.messages.create("sam", f"My name is Ada{LONE}")
    assert r.text and encodable(r.text)
    texts = stored_texts(db_path, agent.id)
    assert f"My name is Ada{FFFD}" in texts  # the user's message is kept, repaired
    assert client.agents.blocks.retrieve("sam", "human").value == f"Name: Ada{FFFD}"
    r2 = client.agents.messages.create("sam", f"Remember that {PAIR} means happy")
    assert "Remember that \U0001f600 means happy" in stored_texts(db_path, agent.id)
    assert "\U0001f600" in r2.text
    streamed = list(client.agents.messages.stream("sam", f"Hello {LONE} again"))
    assert streamed and all(encodable(e.__dict__) for e in streamed)
    assert f"Hello {FFFD} again" in stored_texts(db_path, agent.id)


def test_passages_blocks_system_and_metadata_are_repaired(client: letta_nb.Client, db_path: Path) -> None:
    agent = client.agents.create("sam", system=f"Be brief{LONE}", metadata={"note": LONE},
                                 memory_blocks=[{"label": "persona", "value": f"p{LONE}", "description": LONE}])
    assert agent.system == f"Be brief{FFFD}" and agent.metadata == {"note": FFFD}
    assert agent.block("persona").value == f"p{FFFD}" and agent.block("persona").description == FFFD
    p = client.agents.passages.create("sam", f"paging {LONE} memory", tags=[f"t{LONE}"])
    assert p.text == f"paging {FFFD} memory" and p.tags == (f"t{FFFD}",)
    assert query(str(db_path), "SELECT text FROM passages WHERE id = ?", p.id) == [(f"paging {FFFD} memory",)]
    assert [h.id for h in client.agents.passages.search("sam", f"paging{LONE}", top_k=1)] == [p.id]
    block = client.agents.blocks.update("sam", "persona", value=f"{PAIR}{LONE}", description=f"d{LONE}")
    assert block.value == f"\U0001f600{FFFD}" and block.description == f"d{FFFD}"
    assert query(str(db_path), "SELECT value FROM blocks WHERE agent_id = ? AND label = 'persona'", agent.id) == [
        (f"\U0001f600{FFFD}",)]


@pytest.mark.parametrize("make", [
    lambda c: c.agents.create(f"sam{LONE}"),
    lambda c: c.agents.create("ok", memory_blocks=[{"label": f"persona{LONE}", "value": "x"}]),
    lambda c: c.tools.upsert_from_function(lambda: 1, name=f"tool{LONE}"),
    lambda c: letta_nb.connect(api_keys={"openai": f"sk-{LONE}"}),
], ids=["agent-name", "block-label", "tool-name", "api-key"])
def test_names_with_a_lone_surrogate_are_refused_not_renamed(client: letta_nb.Client, db_path: Path, make) -> None:
    before = table_counts(db_path)
    with pytest.raises(InvalidArgumentError) as info:
        make(client)
    message = str(info.value)
    assert not has_surrogates(message)  # the error itself can be printed, logged, sent to a kernel client
    assert any(word in message for word in ("name", "label", "api_keys"))
    assert table_counts(db_path) == before
    assert client.agents.list() == []  # and the client still answers
    with pytest.raises(letta_nb.AgentNotFoundError):  # a lookup by such a name is simply "not found"
        client.agents.retrieve(f"sam{LONE}")


def echo(text: str) -> str:
    """Return the text with a lone surrogate appended.

    Args:
        text: Anything.
    """
    return text + "\ud800"


def shout(text: str) -> str:
    """Raise with a lone surrogate in the message.

    Args:
        text: Anything.
    """
    raise ValueError("bad \ud800 input")


def test_tool_arguments_results_and_errors_with_surrogates(client: letta_nb.Client, db_path: Path) -> None:
    client.agents.create("sam", tools=[echo, shout])
    # Arguments: the offline model emits these /call arguments verbatim, so the model's JSON carries a
    # \ud800 escape (the user's message itself is plain ASCII).
    client.agents.messages.create("sam", call("archival_memory_insert", raw='{"content": "fact \\ud800 here"}'))
    assert [p.text for p in client.agents.passages.list("sam")] == [f"fact {FFFD} here"]
    r = client.agents.messages.create("sam", call("echo", text="hi") + "\n" + call("shout", text="x"))
    tools = {m.name: m for m in r.messages if m.role == "tool"}
    assert tools["echo"].content == f"hi{FFFD}" and tools["echo"].status == "success"
    assert tools["shout"].content == f"ValueError: bad {FFFD} input" and tools["shout"].status == "error"
    agent_id = client.agents.retrieve("sam").id
    assert f"hi{FFFD}" in stored_texts(db_path, agent_id)


def test_a_remote_model_replying_with_surrogate_escapes(client: letta_nb.Client, db_path: Path) -> None:
    with LoopbackServer() as srv:
        agent = client.agents.create("wire", model=f"openai/loopback-chat?base_url={srv.base_url}")
        # The server JSON-encodes these, so the SDK decodes \ud800 escapes into lone surrogates.
        srv.reply(f"thinking {LONE}", [(f"bogus{LONE}", {"x": LONE})])
        srv.reply(None, [("send_message", {"message": f"reply {LONE} {PAIR}"})])
        events = list(client.agents.messages.stream("wire", "hello"))
    assert all(encodable(e.__dict__) for e in events)
    assert "".join(e.text for e in events if type(e).__name__ == "AssistantDelta") == f"reply {FFFD} \U0001f600"
    texts = stored_texts(db_path, agent.id)
    assert f"thinking {FFFD}" in texts
    assert client.agents.messages.list("wire")[-2].text == f"reply {FFFD} \U0001f600"  # read back from the store
    unknown = [t for t in texts if t.startswith("ToolNotFoundError")]
    assert unknown and FFFD in unknown[0]  # the unknown tool's name, repaired, in the error the model read
    calls = query(str(db_path), "SELECT tool_calls FROM messages WHERE agent_id = ? AND tool_calls IS NOT NULL",
                  agent.id)
    assert f"bogus{FFFD}" in [c["name"] for row in calls for c in json.loads(row[0])]


def test_uploaded_json_with_surrogate_escapes_is_stored(client: letta_nb.Client, tmp_path: Path,
                                                       db_path: Path) -> None:
    client.agents.create("sam")
    (tmp_path / "notes.jsonl").write_text('{"fact": "caf\\ud800 opens at 9"}\n', encoding="utf-8")
    report = client.agents.files.upload("sam", tmp_path / "notes.jsonl", progress=False)
    assert [r.status for r in report.files] == ["added"], report
    assert [p.text for p in client.agents.passages.list("sam")] == [f"fact: caf{FFFD} opens at 9"]


# ---- the magics -----------------------------------------------------------------------------------------


def test_magics_with_surrogates_store_the_turn_and_refuse_names(tmp_path: Path, monkeypatch) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    try:
        with capture_output():
            sh.run_line_magic("load_ext", "letta_nb")
            sh.run_line_magic("letta", "create sam")
        with capture_output() as cap:
            sh.run_cell_magic("letta", "sam -o r", f"My name is Bo{LONE}b")
        assert cap.outputs and all(encodable(o.data) for o in cap.outputs)
        r = sh.user_ns["r"]
        assert [m.content for m in r.messages if m.role == "user"] == [f"My name is Bo{FFFD}b"]
        for line in (f"create x{LONE}", f"tool add f{LONE}", f"stats {LONE}"):
            with pytest.raises(UsageError) as info:
                sh.run_line_magic("letta", line)
            assert not has_surrogates(str(info.value)), line
    finally:
        sh.run_line_magic("unload_ext", "letta_nb")
        InteractiveShell.clear_instance()
