"""Agent Files and secrets and bad input: an export holds no key, a file's secrets are never stored or
exported, an endpoint a file names is not trusted with keys; a malformed, truncated or inconsistent file is a
clear error and changes nothing, and a failure while writing rolls everything back (tests/test_agent_files.py
imports, runs and round-trips the seven real files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_agent_files import DATA, OFFLINE, check_letta_can_import, counts, load, store_text

import letta_nb
from letta_nb.errors import InvalidArgumentError


def test_export_of_a_native_agent_is_importable_and_holds_no_key(db_path: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    planted = "sk-PLANTED-" + "x" * 40
    monkeypatch.setenv("OPENAI_API_KEY", planted)
    with letta_nb.connect(db_path, api_keys={"openai": planted + "-mem"}) as client:
        client.agents.create("sam", model="openai/gpt-4o-mini", embedding="hash", agent_type="letta_v1_agent",
                             memory_blocks=[{"label": "human", "value": "Ada"}], tags=["t"],
                             tool_rules=[{"type": "exit_loop", "tool_name": "conversation_search"}])

        def greet(who: str) -> str:
            """Say hello.

            Args:
                who: whom to greet.
            """
            return f"hello {who}"

        client.agents.tools.attach("sam", greet)
        path = client.agents.export_file("sam", tmp_path / "sam.af")
        text = path.read_text()
        assert "PLANTED" not in text
        doc = json.loads(text)
        check_letta_can_import(doc)
        assert doc["agents"][0]["llm_config"]["handle"] == "openai/gpt-4o-mini"
        assert {t["name"]: t["tool_type"] for t in doc["tools"]}["greet"] == "custom"
        again = client.agents.import_file(path, name="sam2")  # the key is in the environment: no override needed
        assert again.agent.model == "openai/gpt-4o-mini" and again.agent.tool_rules == doc["agents"][0]["tool_rules"]
        assert [b.value for b in again.agent.blocks] == ["Ada"]
        assert "PLANTED" not in store_text(client)
    if isinstance(db_path, Path):  # SQLite: not in any page of the file either
        assert b"PLANTED" not in db_path.read_bytes()


def test_secrets_in_a_file_are_never_stored_or_exported(client: letta_nb.Client, db_path: Path,
                                                         tmp_path: Path) -> None:
    doc = load("memgpt_agent.af")
    doc["agents"][0]["secrets"] = {"GITHUB_TOKEN": "ghp_PLANTED"}
    doc["agents"][0]["tool_exec_environment_variables"] = {"GITHUB_TOKEN": "ghp_PLANTED"}
    doc["agents"][0]["llm_config"]["model_endpoint"] = "https://user:PLANTEDPW@api.example.com/v1"
    client.agents.import_file(json.dumps(doc).encode(), **OFFLINE)
    text = json.dumps(client.agents.export_file("memgpt_agent"))
    assert "PLANTED" not in text and "ghp_" not in text
    assert "ghp_PLANTED" not in store_text(client)
    client.close()
    if isinstance(db_path, Path):  # SQLite: not in any page of the file either
        assert b"ghp_PLANTED" not in db_path.read_bytes()


def _store_with_history(client: letta_nb.Client) -> None:
    client.agents.create("existing", model="offline", embedding="hash")
    client.agents.messages.create("existing", "My name is Ada.")
    client.agents.passages.create("existing", "a passage")

    def helper(x: str) -> str:
        """Echo.

        Args:
            x: text.
        """
        return x

    client.tools.upsert_from_function(helper)


def _broken_files() -> dict[str, tuple[bytes, str]]:
    raw = (DATA / "evie.af").read_bytes()
    doc = load("evie.af")
    dangling = json.loads(json.dumps(doc))
    dangling["agents"][1]["tool_ids"].append("tool-99")
    bad_label = json.loads(json.dumps(doc))
    bad_label["blocks"][5]["label"] = "system/../secret"
    bad_role = json.loads(json.dumps(doc))
    bad_role["agents"][1]["messages"][1]["role"] = "robot"
    bad_rule = json.loads(json.dumps(doc))
    bad_rule["agents"][1]["tool_rules"][1] = {"type": "exit_loop"}
    return {
        "truncated": (raw[: len(raw) // 2], r"not valid JSON: .*\(line \d+, column \d+, character .*truncated"),
        "malformed": (raw.replace(b'"agents": [', b'"agents": [,', 1),
                      r"not valid JSON: Expecting value \(line 2, column"),
        "not an agent file": (b'{"hello": 1}', "no 'agents' list"),
        "dangling tool id": (json.dumps(dangling).encode(),
                             r"agents\[1\]\.tool_ids\[4\] is 'tool-99', which is not a tool of this file"),
        "bad label": (json.dumps(bad_label).encode(), r"label must be an identifier-like name .*'system/\.\./secret'"),
        "bad role": (json.dumps(bad_role).encode(), r"agents\[1\]\.messages\[1\]\.role is 'robot'"),
        "bad rule": (json.dumps(bad_rule).encode(), r"agents\[1\]\.tool_rules\[1\]\['tool_name'\]"),
        "double-encoded truncated": (json.dumps(raw.decode()[:-200]).encode(), "double-encoded"),
    }


@pytest.mark.parametrize("case", list(_broken_files()))
def test_malformed_or_truncated_file_is_a_clear_error_and_changes_nothing(client: letta_nb.Client,
                                                                          case: str) -> None:
    _store_with_history(client)
    before = counts(client)
    data, message = _broken_files()[case]
    with pytest.raises(InvalidArgumentError, match=message):
        client.agents.import_file(data, **OFFLINE)
    assert counts(client) == before


def test_a_failure_while_writing_rolls_back_tools_agents_and_messages(client: letta_nb.Client,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """evie.af writes stubs, a shim, two agents and their messages: the second agent's rows fail (a real SQLite
    constraint: its id made equal to the first's), and nothing of the first, nor any tool, remains."""
    from letta_nb.agentfile import _import

    _store_with_history(client)
    before = counts(client)
    real = _import._agent

    def second_reuses_first_id(*args: Any, **kwargs: Any) -> Any:
        state, msgs = real(*args, **kwargs)
        if args[3] == 1:
            state.id = seen[0]
        else:
            seen.append(state.id)
        return state, msgs

    seen: list[str] = []
    monkeypatch.setattr(_import, "_agent", second_reuses_first_id)
    with pytest.raises(Exception, match="UNIQUE|unique|IntegrityError"):
        client.agents.import_file(DATA / "evie.af", **OFFLINE)
    assert counts(client) == before


def test_an_endpoint_named_by_the_file_is_not_trusted_with_keys(client: letta_nb.Client,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from letta_nb.runtime.runtime import _wrote

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-for-them")
    doc = load("memgpt_agent.af")
    doc["agents"][0]["llm_config"]["model_endpoint"] = "http://127.0.0.1:9/v1"
    report = client.agents.import_file(doc, embedding="hash")
    agent = report.agent
    assert agent.model == "openai/gpt-4o-mini?base_url=http://127.0.0.1:9/v1&context_window=32000"
    assert not _wrote(agent) and [i.kind for i in report.where("mapped")].count("endpoint") == 1
    adopted = client.agents.update(agent.id, model=agent.model)  # the user adopts it: now theirs
    assert _wrote(adopted)
    plain = client.agents.import_file(DATA / "memgpt_agent.af", embedding="hash", name="plain")
    assert plain.agent.model == "openai/gpt-4o-mini?context_window=32000" and _wrote(plain.agent)
