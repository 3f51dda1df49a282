"""The PostgreSQL writer's JSON text for jsonb (postgres/group_commit.py ``jsonb_text``): jsonb refuses NUL and
lone surrogates, so such strings become U+FFFD (letta_nb/_text.py); the value is walked only when its JSON
text shows an escape that can need it, and the result is exactly that of cleaning every value. The stores'
own round trips of such values on PostgreSQL are in test_nul_chars.py, test_surrogates.py and
test_pg_step_path.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from letta_nb._text import clean_json
from letta_nb.store.postgres.group_commit import jsonb_text


@pytest.mark.parametrize("value", [
    [{"id": "call_1", "function": {"name": "send_message", "arguments": '{"message": "hi"}'}}],
    {"a\x00": ["b\ud800", "\U0001f600", "\\ud83d and \\u0000 typed as text", 1, None, 2.5]},
    "x\x00y", {"k": "\udc00"}, {"\u00e9": "\u00fc", "n": [True, False]}, None, ["\ud83d\ude00"],
])
def test_jsonb_text_cleans_exactly_what_the_full_walk_cleans(value: Any) -> None:
    text = jsonb_text(value)
    assert text == json.dumps(clean_json(value))
    decoded = json.dumps(json.loads(text), ensure_ascii=False)
    assert "\x00" not in decoded
    decoded.encode("utf-8")  # no lone surrogate left: jsonb takes it


def test_clean_values_are_dumped_once_without_a_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    import letta_nb.store.postgres.group_commit as group_commit

    walked: list[Any] = []
    monkeypatch.setattr(group_commit, "clean_json", lambda v: walked.append(v) or clean_json(v))
    clean = {"name": "send_message", "arguments": '{"message": "caf\u00e9 \U0001f600"}'}
    assert jsonb_text(clean) == json.dumps(clean) and walked == [clean]  # an emoji's escaped pair: one walk
    plain = {"name": "send_message", "arguments": '{"message": "hello"}'}
    assert jsonb_text(plain) == json.dumps(plain) and walked == [clean]  # no escape: no walk


def test_a_groups_rows_as_json_are_stored_as_the_column_arrays_store_them(pg_server: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """postgres/json_rows.py: the same step written through the JSON parameter and through the column arrays
    (the path it falls back to) leaves the same rows; text JSON cannot carry safely falls back."""
    import asyncio
    import datetime as dt
    import time

    import letta_nb
    from letta_nb.llm.base import ToolCall
    from letta_nb.store.backend import StepWrite
    from letta_nb.store.ids import new_id
    from letta_nb.store.postgres import group_commit as writer_module
    from letta_nb.store.postgres import json_rows
    from letta_nb.store.records import StepRecord
    from letta_nb.store.store import Store
    from tests.test_pg_step_path import grant
    from tests.test_postgres import agents

    at = dt.datetime(2026, 12, 2, 0, 49, 27, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    def write(agent_id: str, token: int, content: str, llm_ms: float) -> StepWrite:
        call = ToolCall(id="call_1", name="send_message", arguments='{"message": "caf\u00e9 \\"q\\" \\\\ ok"}')
        messages = [letta_nb.Message(id=new_id("message"), agent_id=agent_id, seq=1, role="user", content=content,
                                     created_at=at),
                    letta_nb.Message(id=new_id("message"), agent_id=agent_id, seq=2, role="assistant", content="",
                                     tool_calls=(call,), created_at=at),
                    letta_nb.Message(id=new_id("message"), agent_id=agent_id, seq=3, role="tool", content="None",
                                     tool_call_id="call_1", name="send_message", status="success", created_at=at)]
        step = StepRecord(new_id("step"), agent_id, "run-1", 0, "offline", 3, 7, 11, llm_ms, 0.1 + 0.2, 1e-7,
                          None, at)
        return StepWrite(agent_id, messages=messages, step=step, last_seq=3, fence=(token, 0),
                         lease_until=time.time() + 60)

    sent: list[bool] = []
    real = json_rows.rows_json

    def spy(table: Any, records: list[Any]) -> str | None:
        text = real(table, records)
        sent.append(text is not None)
        return text

    async def main() -> list[list[tuple[Any, ...]]]:
        store = await Store.open(pg_server.url(name))
        try:
            ids = await agents(store, "j", "a", "e", "n")
            tokens = [(await grant(store, x)).token for x in ids]
            monkeypatch.setattr(writer_module, "rows_json", spy)
            cases = [(ids[0], tokens[0], "plain \u00e9 text \\ \"quoted\"", 0.5),  # JSON
                     (ids[2], tokens[2], "an emoji \U0001f600", 0.5),  # its escaped pair: the arrays
                     (ids[3], tokens[3], "plain \u00e9 text \\ \"quoted\"", float("nan"))]  # NaN: the arrays
            for agent_id, token, content, ms in cases:
                await store.writer.submit(write(agent_id, token, content, ms))
            monkeypatch.setattr(writer_module, "rows_json", lambda table, records: None)  # the arrays, always
            await store.writer.submit(write(ids[1], tokens[1], "plain \u00e9 text \\ \"quoted\"", 0.5))
            out = []
            for agent_id in ids:
                _, m = await store.query("SELECT seq, role, content, tool_calls, tool_call_id, name, status, "
                                         f"created_at FROM messages WHERE agent_id = '{agent_id}' ORDER BY seq")
                _, s = await store.query("SELECT run_id, step_index, model, n_messages, prompt_tokens, "
                                         "completion_tokens, llm_ms, tools_ms, total_ms, stop_reason, created_at "
                                         f"FROM steps WHERE agent_id = '{agent_id}'")
                out.append([tuple(r) for r in m] + [tuple(r) for r in s])
            return out
        finally:
            await store.close()

    name = pg_server.create_database(pg_server.migrated_template())
    try:
        by_json, by_arrays, emoji, nan = asyncio.run(main())
    finally:
        pg_server.drop_database(name)
    # (messages, steps) of each case, made as it was submitted (group_commit.prepare); a table's rows that JSON
    # cannot carry send the write's rows as arrays, its other table's not even made
    assert sent == [True, True, False, True, False]
    assert by_json == by_arrays and len(by_json) == 4
    assert emoji[0][2] == "an emoji \U0001f600" and emoji[1:] == by_json[1:]
    assert nan[-1][6] != nan[-1][6] and nan[:3] == by_json[:3]  # NaN stored as NaN
    assert by_json[0][2] == 'plain \u00e9 text \\ "quoted"' and by_json[1][7] == at
