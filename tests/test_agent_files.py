"""Agent Files: the seven real Letta exports in tests/agent_files import whole, run a turn, export and
re-import equal; ``%letta import`` works in a real kernel (secrets and malformed files:
tests/test_agent_files_safety.py).

Expectations are read from each file independently of the importer (plain ``json``), so a mapping bug
shows up as a mismatch with the file, not with the importer's own view of it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebooks import this_python_kernel  # noqa: F401  (the fixture: a kernelspec running this Python)

import letta_nb
from letta_nb.agentfile import META_KEY, AgentFileError
from letta_nb.errors import AlreadyExistsError, InvalidArgumentError
from letta_nb.runtime.base_tools import BASE_TOOLS
from letta_nb.runtime.tool_rules import normalize
from letta_nb.runtime.tool_schema import function_from_source

DATA = Path(__file__).parent / "agent_files"
FILES = sorted(p.name for p in DATA.glob("*.af"))
OFFLINE = {"model": "offline", "embedding": "hash"}
PREFIX = {"agents": "agent", "groups": "group", "blocks": "block", "files": "file", "sources": "source",
          "tools": "tool", "mcp_servers": "mcp_server"}
ID = re.compile(r"^(agent|block|tool|message|group|file|source|mcp_server)-\d+$")


def load(name: str) -> dict[str, Any]:
    value = json.loads((DATA / name).read_text())
    return json.loads(value) if isinstance(value, str) else value


def rows(client: letta_nb.Client, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query, NULL as None (a DataFrame shows it as NaN)."""
    frame = client.query(sql)
    return [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in frame.itertuples(index=False)]


def counts(client: letta_nb.Client) -> dict[str, int]:
    return {t: rows(client, f"SELECT count(*) FROM {t}")[0][0]
            for t in ("agents", "blocks", "agent_tools", "tools", "messages", "passages")}


def store_text(client: letta_nb.Client) -> str:
    """Every row of the tables an import writes, as text."""
    tables = ("agents", "blocks", "messages", "tools")
    return "".join(client.query(f"SELECT * FROM {t}").to_json(date_format="iso") for t in tables)


def messages(client: letta_nb.Client, agent_id: str) -> list[dict[str, Any]]:
    """The agent's stored rows, by seq. The id is inlined (the backends take different parameter styles); it is
    checked to be an id first."""
    assert re.fullmatch(r"agent-[0-9a-f-]+", agent_id)
    out = []
    for seq, role, content, calls, call_id, name, status, created in rows(
            client, "SELECT seq, role, content, tool_calls, tool_call_id, name, status, created_at FROM messages "
            f"WHERE agent_id = '{agent_id}' ORDER BY seq"):
        calls = json.loads(calls) if isinstance(calls, str) else calls
        out.append({"seq": seq, "role": role, "content": content, "tool_calls": calls or None,
                    "tool_call_id": call_id, "name": name, "status": status, "created_at": created})
    return out


def text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text") or None


def test_corpus_is_the_seven_files_with_their_license() -> None:
    assert len(FILES) == 7 and (DATA / "LICENSE").exists()
    doubles = {n for n in FILES if isinstance(json.loads((DATA / n).read_text()), str)}
    assert doubles == {"memgpt_agent.af", "customer_service.af"}


@pytest.mark.parametrize("name", FILES)
def test_file_imports_every_block_tool_rule_and_message(client: letta_nb.Client, name: str) -> None:
    doc = load(name)
    report = client.agents.import_file(DATA / name, **OFFLINE)
    assert report.double_encoded == (name in ("memgpt_agent.af", "customer_service.af"))
    assert [a.name for a in report.agents] == [a["name"] for a in doc["agents"]]
    tools = {t["id"]: t for t in doc["tools"]}
    blocks = {b["id"]: b for b in doc["blocks"]}
    for agent, raw in zip(report.agents, doc["agents"], strict=True):
        assert (agent.model, agent.embedding) == ("offline", "hash")
        assert agent.system == raw["system"] and agent.tags == raw["tags"]
        want_type = "memgpt_agent" if raw["agent_type"] == "memgpt_agent" else "letta_v1_agent"
        assert agent.agent_type == want_type
        # blocks: every field as in the file (none of the corpus is over its limit)
        got = {b.label: (b.value, b.limit, b.description, b.read_only) for b in agent.blocks}
        want = {blocks[i]["label"]: (blocks[i]["value"], blocks[i]["limit"], blocks[i]["description"] or "",
                                     bool(blocks[i]["read_only"])) for i in raw["block_ids"]}
        assert got == want
        # tools: the same names; base tools are letta_nb's, the rest stored (sandboxed or stubs)
        assert sorted(agent.tools) == sorted({tools[i]["name"] for i in raw["tool_ids"]})
        for tool_id in raw["tool_ids"]:
            tool = tools[tool_id]
            spec = client.tools.retrieve(tool["name"])
            if tool["name"] in BASE_TOOLS:
                assert spec is BASE_TOOLS[tool["name"]]
            elif tool["tool_type"] == "custom" and tool["source_code"] and tool.get("source_type") == "python":
                assert spec.source == tool["source_code"] and spec.sandbox == "strict" and not spec.network
            else:
                assert spec.sandbox is False and "letta_nb stub" in spec.source or "shim" in spec.source
        assert agent.tool_rules == normalize(raw["tool_rules"])
        # messages: one row each, in order, roles and text as in the file; the window is the file's
        stored = messages(client, agent.id)
        assert len(stored) == len(raw["messages"])
        assert [m["role"] for m in stored] == [m["role"] for m in raw["messages"]]
        assert [m["content"] for m in stored] == [text_of(m["content"]) for m in raw["messages"]]
        window = [m for m in stored if m["seq"] >= agent.context_start_seq]
        in_context = [m for m in raw["messages"] if m["id"] in raw["in_context_message_ids"]]
        assert in_context[0]["role"] == "system"  # Letta's compiled prompt: letta_nb builds its own
        assert [m["content"] for m in window] == [text_of(m["content"]) for m in in_context[1:]]
        for got_m, raw_m in zip(stored, raw["messages"], strict=True):
            calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in raw_m["tool_calls"] or []]
            assert [(c["id"], c["name"], c["arguments"]) for c in got_m["tool_calls"] or []] == calls
            assert got_m["tool_call_id"] == raw_m["tool_call_id"]
    assert len(report.groups) == len(doc["groups"])


@pytest.mark.parametrize("name", FILES)
def test_imported_agent_runs_a_turn_with_the_offline_model(client: letta_nb.Client, name: str) -> None:
    agent = client.agents.import_file(DATA / name, **OFFLINE).agent
    before = len(messages(client, agent.id))
    r = client.agents.messages.create(agent.id, "My name is Ada.")
    assert r.text.strip() and r.stop_reason
    assert len(messages(client, agent.id)) == before + len(r.messages)


def canonical(client: letta_nb.Client, agent: letta_nb.AgentState) -> dict[str, Any]:
    """An agent as stored, without ids and names (what a round trip must keep)."""
    a = client.agents.retrieve(agent.id)
    meta = json.loads(json.dumps(a.metadata))
    meta.get(META_KEY, {}).get("group", {}).pop("id", None)
    stored = messages(client, a.id)
    for m in stored:
        m.pop("seq")
    window = len([m for m in messages(client, a.id) if m["seq"] >= a.context_start_seq])
    tools = {}
    for t in a.tools:
        spec = client.tools.retrieve(t)
        tools[t] = (spec.description, spec.parameters, spec.source, spec.sandbox)
    return {"model": a.model, "embedding": a.embedding, "system": a.system, "type": a.agent_type, "tags": a.tags,
            "rules": a.tool_rules, "tools": tools, "metadata": meta, "window": window, "messages": stored,
            "blocks": sorted((b.label, b.value, b.limit, b.description, b.read_only) for b in a.blocks)}


def check_letta_can_import(doc: dict[str, Any]) -> None:
    """What Letta's importer checks (agent_serialization_manager._validate_schema) plus what its models need."""
    ids: set[str] = set()
    for key in ("agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers"):
        for entity in doc[key]:
            assert ID.match(entity["id"]) and entity["id"].rsplit("-", 1)[0] == PREFIX[key]
            assert entity["id"] not in ids
            ids.add(entity["id"])
    for agent in doc["agents"]:
        msg_ids = [m["id"] for m in agent["messages"]]
        assert all(ID.match(i) and i.startswith("message-") and i not in ids for i in msg_ids)
        assert len(set(msg_ids)) == len(msg_ids)
        assert set(agent["in_context_message_ids"]) <= set(msg_ids)
        first = next(m for m in agent["messages"] if m["id"] == agent["in_context_message_ids"][0])
        assert first["role"] == "system"
        assert set(agent["tool_ids"]) <= {t["id"] for t in doc["tools"]}
        assert set(agent["block_ids"]) <= {b["id"] for b in doc["blocks"]}
        assert set(agent["group_ids"]) <= {g["id"] for g in doc["groups"]}
        for key in ("model", "model_endpoint_type", "context_window"):
            assert agent["llm_config"][key] is not None
        for key in ("embedding_model", "embedding_endpoint_type", "embedding_dim"):
            assert agent["embedding_config"][key] is not None
    for group in doc["groups"]:
        assert set(group["agent_ids"]) | {group["manager_config"]["manager_agent_id"]} <= {a["id"] for a in
                                                                                          doc["agents"]}


@pytest.mark.parametrize("name", FILES)
def test_round_trip_import_export_import_is_equal_modulo_ids(client: letta_nb.Client, name: str,
                                                             tmp_path: Path) -> None:
    first = client.agents.import_file(DATA / name, **OFFLINE)
    out = client.agents.export_file(first.agent.name, tmp_path / "out.af")
    doc = json.loads(out.read_text())
    check_letta_can_import(doc)
    raw = load(name)
    assert len(doc["agents"]) == len(raw["agents"]) and len(doc["groups"]) == len(raw["groups"])
    # Letta's own configs and types come back (the offline override is letta_nb's business)
    for mine, theirs in zip(doc["agents"], raw["agents"], strict=True):
        assert mine["llm_config"] == theirs["llm_config"] and mine["agent_type"] == theirs["agent_type"]
        assert mine["description"] == theirs["description"]
    second = client.agents.import_file(out, suffix="-again", **OFFLINE)
    assert [a.name for a in second.agents] == [f"{a.name}-again" for a in first.agents]
    assert not second.where("sandboxed") and not second.where("stub")  # the same tools: reused
    for a, b in zip(first.agents, second.agents, strict=True):
        assert canonical(client, a) == canonical(client, b)


def test_model_that_cannot_run_here_names_the_override(client: letta_nb.Client) -> None:
    before = counts(client)
    with pytest.raises(AgentFileError, match=r"anthropic/claude-sonnet-4-5.*Pass model=\.\.\."):
        client.agents.import_file(DATA / "deep_research_agent.af", embedding="hash")
    with pytest.raises(AgentFileError, match=r"openai/gpt-4o-mini.*no API key.*Pass model=\.\.\."):
        client.agents.import_file(DATA / "memgpt_agent.af", embedding="hash")  # no OPENAI_API_KEY in tests
    with pytest.raises(AgentFileError, match=r"embedding 'openai/text-embedding-3-small'.*Pass embedding=\.\.\."):
        client.agents.import_file(DATA / "memgpt_agent.af", model="offline")
    assert counts(client) == before


def test_block_over_its_limit_is_imported_with_the_limit_raised_and_reported(client: letta_nb.Client) -> None:
    doc = load("memgpt_agent.af")
    doc["blocks"][1]["limit"] = 100  # persona: 1172 characters
    report = client.agents.import_file(doc, **OFFLINE)
    persona = report.agent.block("persona")
    assert persona.value == doc["blocks"][1]["value"] and persona.limit == len(persona.value)
    (raised,) = report.raised
    assert raised.name == "persona" and "limit 100 raised to 1172" in raised.detail
    assert "raised" in repr(report) and "persona" in report.to_dataframe().query("action == 'raised'")["name"].tolist()


def test_path_like_labels_are_kept_and_looked_up(client: letta_nb.Client) -> None:
    agent = client.agents.import_file(DATA / "lettabot.af", **OFFLINE).agent
    assert "system/human/work" in agent.memory
    assert client.agents.blocks.retrieve(agent.id, "system/persona/soul").limit == 50000
    for label in ("../x", "a//b", "/a", "a/", "a/./b"):
        with pytest.raises(InvalidArgumentError, match="identifier-like"):
            client.agents.create(f"x{len(label)}", memory_blocks=[{"label": label, "value": ""}])


def test_name_clash_is_an_error_and_name_or_suffix_resolve_it(client: letta_nb.Client) -> None:
    client.agents.import_file(DATA / "memgpt_agent.af", **OFFLINE)
    before = counts(client)
    with pytest.raises(AlreadyExistsError, match=r"'memgpt_agent' already exists.*name=.*suffix="):
        client.agents.import_file(DATA / "memgpt_agent_with_convo.af", **OFFLINE)
    assert counts(client) == before
    assert client.agents.import_file(DATA / "memgpt_agent_with_convo.af", name="convo", **OFFLINE).agent.name == "convo"


def test_tools_letta_nb_cannot_run_are_reported_and_fail_clearly_when_called(client: letta_nb.Client) -> None:
    report = client.agents.import_file(DATA / "deep_research_agent.af", **OFFLINE)
    stubs = {i.name for i in report.where("stub")}
    assert stubs == {"web_search", "memory"}
    with pytest.raises(NotImplementedError, match="web_search is a Letta built-in tool .* letta_nb cannot run"):
        function_from_source(client.tools.retrieve("web_search").source, "web_search")(query="x")
    sandboxed = {i.name: i.detail for i in report.where("sandboxed")}
    assert set(sandboxed) == {"create_research_plan", "reset_research"}
    assert "agent_state" in sandboxed["create_research_plan"]
    # a different stored tool of a custom tool's name is not overwritten
    doc = load("customer_service.af")
    doc["tools"][0]["source_code"] += "\n# changed\n"
    client.agents.import_file(DATA / "customer_service.af", **OFFLINE)
    with pytest.raises(AgentFileError, match="existing_tools='keep'"):
        client.agents.import_file(doc, suffix="-2", **OFFLINE)
    kept = client.agents.import_file(doc, suffix="-3", existing_tools="keep", **OFFLINE)
    assert [i.name for i in kept.where("kept")] == [doc["tools"][0]["name"]]


def test_sleeptime_group_imports_both_agents_and_exports_the_group(client: letta_nb.Client) -> None:
    report = client.agents.import_file(DATA / "evie.af", **OFFLINE)
    assert [a.name for a in report.agents] == ["Evie", "companion-sleeptime_copy"]
    (group,) = report.groups
    assert group.name == "sleeptime" and "companion-sleeptime_copy" in group.detail
    sleeper = report.agents[1]
    assert sleeper.metadata[META_KEY]["agent_type"] == "sleeptime_agent"
    assert {r["type"] for r in sleeper.tool_rules} == {"continue_loop", "exit_loop"}
    doc = client.agents.export_file("companion-sleeptime_copy")  # either agent exports the whole group
    (g,) = doc["groups"]
    manager = next(a for a in doc["agents"] if a["id"] == g["manager_config"]["manager_agent_id"])
    assert manager["name"] == "Evie" and manager["group_ids"] == [g["id"]]
    assert g["manager_config"]["manager_type"] == "sleeptime" and g["manager_config"]["sleeptime_agent_frequency"] == 5


def test_import_report_renders_and_is_exported() -> None:
    assert letta_nb.ImportReport is letta_nb.agentfile.ImportReport
    report = letta_nb.ImportReport(source="x.af")
    report.add("tool", "<script>", "stub", "a", "why")
    assert "&lt;script&gt;" in report._repr_html_() and "stub tool <script> (a): why" in repr(report)
    assert list(report.to_dataframe().columns) == ["kind", "name", "action", "agent", "detail"]


def test_letta_import_and_export_magics_in_a_real_kernel(this_python_kernel: str, tmp_path: Path,  # noqa: F811
                                                         letta_home: Path) -> None:
    out = tmp_path / "evie-out.af"
    cells = ["%load_ext letta_nb",
             f"%letta import {DATA / 'evie.af'} --model offline --embedding hash",
             "%%letta -o r\nMy name is Ada.",
             "assert r.text.strip(), r",
             f"%letta export Evie {out}",
             f"%letta import {DATA / 'evie.af'}"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name=this_python_kernel, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    def stderr(cell: Any) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")

    for cell in nb.cells[:5]:
        assert not [o for o in cell.outputs if o.output_type == "error"] and "Error" not in stderr(cell), cell.outputs
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[1].outputs)
    assert "ImportReport" in shown and "Evie" in shown
    assert "exported to" in "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[4].outputs)
    assert [a["name"] for a in json.loads(out.read_text())["agents"]] == ["Evie", "companion-sleeptime_copy"]
    # a bad import is a one-line UsageError (no traceback) that says how to fix it, and imports nothing
    assert stderr(nb.cells[5]).startswith("UsageError: An agent named 'Evie' already exists") and "suffix=" in \
        stderr(nb.cells[5])
    with sqlite3.connect(letta_home / "letta_nb.db") as db:
        assert db.execute("SELECT count(*) FROM agents").fetchone()[0] == 2


def test_reasoning_and_approvals_are_reported_and_a_message_of_two_returns_becomes_two(
        client: letta_nb.Client) -> None:
    doc = load("loop.af")
    agent = doc["agents"][0]
    call, result = agent["messages"][1], agent["messages"][2]
    call["content"] = [{"type": "reasoning", "reasoning": "thinking..."}]
    call["tool_calls"].append({"id": "call-2", "type": "function",
                               "function": {"name": "conversation_search", "arguments": "{\"query\": \"x\"}"}})
    result["tool_returns"].append({"tool_call_id": "call-2", "status": "error", "func_response": "no index"})
    agent["messages"].append({**result, "id": "message-9", "role": "approval", "tool_returns": []})
    report = client.agents.import_file(doc, **OFFLINE)
    stored = messages(client, report.agent.id)
    assert [m["role"] for m in stored] == ["system", "assistant", "tool", "tool"]
    assert [(m["tool_call_id"], m["name"], m["status"]) for m in stored[2:]] == [
        (call["tool_calls"][0]["id"], "send_message", "success"), ("call-2", "conversation_search", "error")]
    assert stored[3]["content"] == "no index" and stored[1]["content"] is None
    assert {i.name for i in report.where("dropped")} == {"1 reasoning content part(s)", "1 approval message(s)"}
