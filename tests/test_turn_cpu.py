"""What a turn no longer pays for (issue 19), with the behaviour kept: the prompt carries its token estimate
(the offline model does not rescan the window), a turn's steps renew the lease row once per tenth of its
ttl, the step writer formats times as before, and the offline model's cached reading of a tool list
notices a list that changed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time
from typing import Any

import letta_nb
from letta_nb.llm import _offline_rules
from letta_nb.llm.offline import _prompt_tokens
from letta_nb.llm.tokens import MESSAGE_OVERHEAD_TOKENS, Prompt, message_tokens
from letta_nb.store.ids import DT_FORMAT
from letta_nb.store.sqlite.step_writer import _sql_time, insert_rows


def test_the_prompt_carries_the_sessions_token_estimate_and_the_model_reports_it(tmp_path: Any) -> None:
    with letta_nb.connect(str(tmp_path / "s.db")) as client:
        agent = client.agents.create("p", model="offline")
        for i in range(3):
            client.agents.messages.create(agent.id, f"message number {i}")
        rt = client.runtime
        session = client._thread.run(rt.session(agent.id))
        pending = [session.messages[-3]]  # any committed user message stands in for a new one
        prompt = session.prompt(pending)
        assert isinstance(prompt, Prompt) and isinstance(prompt, list)
        assert prompt.tokens == session.prompt_tokens(pending)  # the same running totals, no second count
        assert list(prompt) == [session.system_message()[0], *(m.openai for m in session.messages), pending[0].openai]
        expected = session.prompt_tokens() + message_tokens({"role": "user", "content": "one more"})
        r = client.agents.messages.create(agent.id, "one more")
        assert r.steps[0].prompt_tokens == expected  # the model reported the runtime's estimate of its prompt
        assert _prompt_tokens(Prompt([{"role": "user", "content": "x" * 400}], 7)) == 7  # read, not rescanned
        plain = [{"role": "user", "content": "x" * 400}]
        assert _prompt_tokens(plain) == 100 + MESSAGE_OVERHEAD_TOKENS  # a plain list is still estimated


def _expires_at(path: str, agent_id: str) -> float:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT expires_at FROM agent_leases WHERE agent_id = ?", (agent_id,)).fetchone()
        return float(row[0])
    finally:
        conn.close()


def test_step_commits_renew_the_lease_row_once_per_tenth_of_the_ttl(tmp_path: Any) -> None:
    path = str(tmp_path / "l.db")
    with letta_nb.connect(path, lease_ttl=60) as client:  # a tenth: 6 s, far more than two turns take
        leases = client.runtime.leases
        agent = client.agents.create("p", model="offline")
        client.agents.messages.create(agent.id, "first")
        lease = leases.held[agent.id]
        first = _expires_at(path, agent.id)
        assert time.time() + 54 < first <= time.time() + 60  # the turn's commit renewed the row to now + ttl
        client.agents.messages.create(agent.id, "second")  # the kept lease, renewed moments ago: no UPDATE
        assert leases.held[agent.id] is lease and _expires_at(path, agent.id) == first
        lease.row_renewed_at -= 6.5  # as if a tenth of the ttl had passed since
        client.agents.messages.create(agent.id, "third")
        assert _expires_at(path, agent.id) > first  # renewed again
        assert len(client.agents.messages.list(agent.id)) == 9  # every turn stored whole
        assert leases.until(None) is not None  # a commit without a lease to track always carries a renewal


def test_step_writer_times_are_the_stores_text_format() -> None:
    for value in (dt.datetime(2026, 12, 1, 20, 41, 56, 123456, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=dt.timezone.utc),  # no microseconds: still 6 digits
                  dt.datetime(2026, 6, 30, 23, 59, 59, 5)):
        assert _sql_time(value) == value.strftime(DT_FORMAT)
    assert _sql_time(None) is None


def test_the_offline_models_reading_of_a_tool_list_notices_a_changed_list() -> None:
    def tool(name: str, heartbeat: bool) -> dict[str, Any]:
        props = {"request_heartbeat": {"type": "boolean"}} if heartbeat else {}
        return {"type": "function", "function": {"name": name, "parameters": {"properties": props}}}

    tools = [tool("a", True)]
    assert _offline_rules._heartbeat_params(tools) == {"a": True}
    assert _offline_rules._heartbeat_params(tools) is _offline_rules._heartbeat_params(tools)  # kept
    tools.append(tool("b", False))  # grown in place: read again
    assert _offline_rules._heartbeat_params(tools) == {"a": True, "b": False}
    assert _offline_rules._heartbeat_params([tool("a", False)]) == {"a": False}  # another list, its own reading


def test_indexed_rows_go_in_multi_row_statements_and_are_all_searchable(tmp_path: Any) -> None:
    path = str(tmp_path / "m.db")
    with letta_nb.connect(path) as client:
        agent = client.agents.create("p", model="offline")
        client.agents.messages.create(agent.id, "hello")
        last = client.agents.messages.list(agent.id)[-1]
        n = 300  # 128 + 128 + 32 + 8 + 4: five statements of cached sizes
        rows = [dataclasses.replace(last, id=f"message-x{i}", seq=last.seq + 1 + i, content=f"zebra number {i}")
                for i in range(n)]

        async def write() -> None:
            await client.runtime.store.writer.submit(lambda cur: insert_rows(cur, "messages", rows))

        client._thread.run(write())
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("SELECT seq, content FROM messages WHERE content LIKE 'zebra%' ORDER BY seq").fetchall()
        assert stored == [(last.seq + 1 + i, f"zebra number {i}") for i in range(n)]  # all, each once, in order
        assert conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zebra'").fetchone() == (n,)
    finally:
        conn.close()
