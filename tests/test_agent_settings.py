"""Agent type, tool rules and tags: stored with the agent in Letta's shapes, checked before anything is written."""

from __future__ import annotations

import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.tool_rules import normalize

RULES = [
    {"type": "run_first", "tool_name": "core_memory_append"},
    {"type": "constrain_child_tools", "tool_name": "core_memory_append", "children": ["send_message"]},
    {"type": "conditional", "tool_name": "archival_memory_search", "child_output_mapping": {"none": "send_message"},
     "default_child": "send_message"},
    {"type": "exit_loop", "tool_name": "send_message"},
    {"type": "max_count_per_step", "tool_name": "archival_memory_insert", "max_count_limit": 2},
]


def test_type_rules_and_tags_survive_reopen(tmp_path):
    path = tmp_path / "store.db"
    with letta_nb.connect(path) as client:
        agent = client.agents.create("a", agent_type="memgpt_agent", tool_rules=RULES, tags=["x", "y"])
        assert agent.agent_type == "memgpt_agent"
        assert [r["type"] for r in agent.tool_rules] == [r["type"] for r in RULES]
        assert agent.tool_rules[2]["require_output_mapping"] is False  # defaults filled in Letta's shape
        assert agent.tags == ["x", "y"]
        plain = client.agents.create("b")
        assert (plain.agent_type, plain.tool_rules, plain.tags) == ("memgpt_agent", [], [])
    with letta_nb.connect(path) as client:
        again = client.agents.retrieve("a")
        assert again.tool_rules == agent.tool_rules and again.tags == ["x", "y"]
        updated = client.agents.update("a", agent_type="letta_v1_agent", tool_rules=[], tags=["z"])
        assert (updated.agent_type, updated.tool_rules, updated.tags) == ("letta_v1_agent", [], ["z"])
        assert client.agents.retrieve("a").version > again.version


@pytest.mark.parametrize(("rules", "needle"), [
    ([{"type": "run_firts", "tool_name": "send_message"}], "tool_rules[0]['type']"),
    ([{"type": "exit_loop"}], "tool_rules[0]['tool_name']"),
    ([{"type": "constrain_child_tools", "tool_name": "send_message"}], "needs 'children'"),
    ([{"type": "max_count_per_step", "tool_name": "send_message", "max_count_limit": 0}], "positive integer"),
    ([{"type": "exit_loop", "tool_name": "send_message", "children": []}], "unknown key"),
    ([{"type": "exit_loop", "tool_name": "no_such_tool"}], "does not have"),
    ("exit_loop", "must be a list"),
])
def test_bad_rules_are_refused_and_nothing_is_written(tmp_path, rules, needle):
    with letta_nb.connect(tmp_path / "s.db") as client:
        with pytest.raises(InvalidArgumentError) as err:
            client.agents.create("a", tool_rules=rules)
        assert needle in str(err.value)
        assert client.agents.list() == []
        client.agents.create("a")
        with pytest.raises(InvalidArgumentError):
            client.agents.update("a", tool_rules=rules)
        assert client.agents.retrieve("a").tool_rules == []


def test_agent_type_is_checked(tmp_path):
    with letta_nb.connect(tmp_path / "s.db") as client, pytest.raises(InvalidArgumentError, match="letta_v1_agent"):
        client.agents.create("a", agent_type="react")


def test_old_letta_rule_names_map_to_current_types():
    assert normalize([{"type": "InitToolRule", "tool_name": "t"}])[0]["type"] == "run_first"
    assert normalize([{"type": "TerminalToolRule", "tool_name": "t"}])[0]["type"] == "exit_loop"
