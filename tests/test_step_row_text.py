"""The text the SQLite step writer binds is byte for byte the text it wrote before, so stored rows (and whatever
reads them as text, or compares them: times are ordered as text) do not change: a message's ``tool_calls`` column
is ``json.dumps(tool_calls_value(...))``; a time that reuses the last second's text (step_writer ``_sql_time``)
is ``isoformat(" ", "microseconds")[:26]``, from any order of times and from two threads at once."""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import threading
from pathlib import Path

import pytest

from letta_nb.store.ids import DT_FORMAT
from letta_nb.store.records import tool_calls_value
from letta_nb.store.sqlite.step_writer import _sql_time


def test_a_turn_stores_the_calls_text_on_sqlite(client, db_path: Path):
    if not isinstance(db_path, Path):
        pytest.skip("reads the SQLite file")
    agent = client.agents.create("sam", model="offline")
    r = client.agents.messages.create(agent.id, input="My name is Ada \u00e9t\u00e9.")
    with_calls = [m for m in r.messages if m.tool_calls]
    assert with_calls  # the offline model calls tools (core memory, send_message)
    with sqlite3.connect(db_path) as db:
        stored = dict(db.execute("SELECT id, tool_calls FROM messages WHERE agent_id = ?", (agent.id,)).fetchall())
    for m in with_calls:
        assert stored[m.id] == json.dumps(tool_calls_value(m.tool_calls))
    assert all(stored[m.id] is None for m in r.messages if not m.tool_calls)


UTC = dt.timezone.utc


def _former(v: dt.datetime) -> str:
    return v.isoformat(" ", "microseconds")[:26]


def test_times_are_the_former_text_in_any_order_and_any_zone():
    base = dt.datetime(2026, 12, 31, 23, 59, 58, 999_998, tzinfo=UTC)
    steps = [base + dt.timedelta(microseconds=k) for k in range(0, 3_000_003, 250_001)]  # across a year's end
    edges = [dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
             dt.datetime(2028, 2, 29, 12, 0, 0, 0, tzinfo=UTC), dt.datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=UTC)]
    others = [dt.datetime(2026, 6, 30, 23, 59, 59, 5),  # naive (read back from SQLite)
              dt.datetime(2026, 6, 30, 23, 59, 59, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))]
    values = steps + edges + others + steps[::-1] + [base, base.replace(second=57), base]
    for v in values:
        assert _sql_time(v) == _former(v)
    for v in steps + edges[1:] + others:  # (glibc's %Y does not pad year 1: isoformat, as before, does)
        assert _sql_time(v) == v.strftime(DT_FORMAT)  # the store's text format (store/ids.py)
    assert _sql_time(None) is None


def test_times_formatted_from_two_threads_at_once_stay_right():
    rng = random.Random(7)
    start = dt.datetime(2026, 12, 2, 0, 0, 0, tzinfo=UTC)
    samples = [[start + dt.timedelta(microseconds=rng.randrange(5_000_000)) for _ in range(20_000)] for _ in range(2)]
    wrong: list[dt.datetime] = []

    def format_all(values: list[dt.datetime]) -> None:
        wrong.extend(v for v in values if _sql_time(v) != _former(v))

    threads = [threading.Thread(target=format_all, args=(vs,)) for vs in samples]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_message_tokens_are_counted_once_and_equal_the_estimate_of_its_openai_form(client):
    from letta_nb.llm.tokens import message_tokens

    agent = client.agents.create("tok", model="offline")
    r = client.agents.messages.create(agent.id, input="My name is Ada and I like \u00e9t\u00e9 tea.")
    for m in r.messages:
        assert m.tokens == message_tokens(m.openai)
        assert "tokens" in m.__dict__  # cached on the message: the window and the prompt reuse it
    window = client.agents.context(agent.id)  # the window's count is the sum of its messages' estimates
    in_window = client.agents.messages.list(agent.id)[-window.messages_in_window:]
    assert window.messages_tokens == sum(message_tokens(m.openai) for m in in_window)
