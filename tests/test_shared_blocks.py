"""Shared core-memory blocks (store/shared_blocks.py): one block attached to several agents.

An edit (through the API or an agent's memory tool) is seen by every agent the block is attached to on its
next turn, in this process and in another; two agents in two processes appending to one block at once
lose no edit (the step writer's compare-and-set refuses a step built on a stale value and the turn redoes
it); stores from before the migration keep their blocks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import call, record_prompts
from store_query import query

import letta_nb
from letta_nb.errors import BlockLimitError, InvalidArgumentError

ROOT = Path(__file__).resolve().parent.parent


def _two_agents(client: letta_nb.Client, value: str = "Project: Apollo") -> tuple[Any, Any, Any]:
    persona = [{"label": "persona", "value": "A teammate."}]
    a = client.agents.create(name="ann", model="offline", memory_blocks=persona)
    b = client.agents.create(name="bob", model="offline", memory_blocks=persona)
    team = client.blocks.create(label="team", value=value, description="What the team knows.")
    client.agents.blocks.attach(team.id, agent_id=a.id)
    client.agents.blocks.attach(team.id, agent_id="bob")  # by name too
    return a, b, team


def test_one_block_attached_to_two_agents_and_edited_through_the_api(client, db_path):
    a, b, team = _two_agents(client)
    assert client.blocks.retrieve(team.id).agent_ids == sorted([a.id, b.id])
    assert client.agents.blocks.retrieve("team", agent_id=b.id).id == team.id  # one block, one id, both agents

    client.agents.blocks.update("team", agent_id=a.id, value="Project: Gemini")  # through one agent ...
    assert client.agents.blocks.retrieve(b, "team").value == "Project: Gemini"  # ... seen by the other
    client.blocks.update(team.id, value="Project: Mercury", limit=100, description="Shared.")
    for agent in (a, b):
        seen = client.agents.blocks.retrieve("team", agent_id=agent.id)
        assert (seen.value, seen.limit, seen.description) == ("Project: Mercury", 100, "Shared.")
    with pytest.raises(BlockLimitError):
        client.blocks.update(team.id, value="x" * 101)
    assert client.blocks.retrieve(team.id).value == "Project: Mercury"  # refused whole

    # The store holds one value: the shared row and both agents' rows agree.
    rows = query(str(db_path), "SELECT value FROM blocks WHERE shared_id = ?", team.id)
    assert rows == [("Project: Mercury",), ("Project: Mercury",)]


def test_a_memory_tool_edit_is_in_the_other_agents_next_prompt(client):
    recorder = record_prompts(client)
    a, b, _ = _two_agents(client)
    client.agents.messages.create(a.id, call("core_memory_append", label="team", content="Launch is on Friday."))
    assert client.agents.blocks.retrieve("team", agent_id=b.id).value == "Project: Apollo\nLaunch is on Friday."
    recorder.prompts.clear()
    client.agents.messages.create(b.id, "hello")
    system = recorder.prompts[0][0][0]["content"]
    assert "Launch is on Friday." in system


def test_detach_delete_and_what_stays(client):
    a, b, team = _two_agents(client)
    client.agents.blocks.detach(team.id, agent_id=b.id)
    assert [bl.label for bl in client.agents.blocks.list(b)] == ["persona"]
    assert client.blocks.retrieve(team.id).agent_ids == [a.id]
    with pytest.raises(InvalidArgumentError, match="not attached"):
        client.agents.blocks.detach(team.id, agent_id=b.id)

    client.agents.delete(a)  # the agent goes, the block stays for others
    assert client.blocks.retrieve(team.id).agent_ids == []
    client.agents.blocks.attach(team.id, agent_id=b.id)
    assert client.agents.blocks.retrieve("team", agent_id=b.id).value == "Project: Apollo"

    client.blocks.delete(team.id)
    assert [bl.label for bl in client.agents.blocks.list(b)] == ["persona"]
    assert client.blocks.list() == []
    with pytest.raises(InvalidArgumentError, match="names no block"):
        client.blocks.retrieve(team.id)


def test_an_agents_own_block_can_be_shared_by_its_id(client):
    a = client.agents.create(name="ann", model="offline",
                             memory_blocks=[{"label": "human", "value": "Name: Ada"}])
    b = client.agents.create(name="bob", model="offline", memory_blocks=[{"label": "persona", "value": "Bob."}])
    human = client.agents.blocks.retrieve("human", agent_id=a.id)
    client.agents.blocks.attach(human.id, agent_id=b.id)
    client.agents.messages.create(b, call("core_memory_append", label="human", content="Likes tea."))
    assert client.agents.blocks.retrieve(a, "human").value == "Name: Ada\nLikes tea."
    assert [bl.label for bl in client.blocks.list(label="human")] == ["human"]


def test_attaching_a_label_the_agent_has_is_refused(client):
    a = client.agents.create(name="ann", model="offline")  # has "human"
    other = client.blocks.create(label="human", value="someone else")
    with pytest.raises(InvalidArgumentError, match="already has a block labelled 'human'"):
        client.agents.blocks.attach(other.id, agent_id=a.id)
    assert client.agents.blocks.retrieve(a, "human").value == ""


_CHILD = textwrap.dedent("""
    import os, sys, time
    import letta_nb
    db, agent, tag, n, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    client = letta_nb.connect(db)
    client.agents.blocks.retrieve("team", agent_id=agent)  # session cached before the race starts
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(n):
        text = '/call core_memory_append {"label": "team", "content": "%s-%d"}' % (tag, i)
        client.agents.messages.create(agent, text)
    print(client.agents.blocks.retrieve("team", agent_id=agent).value.replace(chr(10), "|"), flush=True)
    client.close()
""")


@pytest.mark.slow
def test_two_agents_in_two_processes_editing_one_block_lose_no_edit(client, db_path, tmp_path):
    a, b, team = _two_agents(client, value="facts:")
    n = 12
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(db_path), agent, tag, str(n), str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                for agent, tag in ((a.id, "A"), (b.id, "B"))]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        go.touch()
        outs = [child.communicate(timeout=240) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, err) in zip(children, outs, strict=True):
        assert child.returncode == 0, err
    want = {f"{tag}-{i}" for tag in "AB" for i in range(n)}
    final = client.blocks.retrieve(team.id).value.split("\n")
    assert final[0] == "facts:" and sorted(final[1:]) == sorted(want)  # every edit, each once
    for agent in (a, b):  # this process's cached sessions were reloaded: both agents see all of it
        assert client.agents.blocks.retrieve("team", agent_id=agent.id).value.split("\n") == final
    # The process whose turn finished last saw the other's edits too; each saw its own in order.
    for tag, (out, _) in zip("AB", outs, strict=True):
        seen = out.strip().splitlines()[-1].split("|")
        assert [x for x in seen if x.startswith(tag)] == [f"{tag}-{i}" for i in range(n)]


def test_a_store_from_before_sharing_keeps_its_blocks_and_can_share_them(tmp_path):
    from test_store_migrations import build_v1_store

    path = str(tmp_path / "v1.db")
    agent_id = build_v1_store(path)
    with letta_nb.connect(path) as client:
        blocks = {bl.label: bl.value for bl in client.agents.blocks.list(agent_id)}
        assert blocks == {"persona": "I remember things.", "human": "Name: Grace"}
        assert query(path, "SELECT count(*) FROM blocks WHERE shared_id IS NULL") == [(2,)]
        other = client.agents.create(name="new", model="offline", memory_blocks=[{"label": "persona", "value": "."}])
        human = client.agents.blocks.retrieve("human", agent_id=agent_id)
        client.agents.blocks.attach(human.id, agent_id=other.id)
        assert client.agents.blocks.retrieve("human", agent_id=other.id).value == "Name: Grace"
