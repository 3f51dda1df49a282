"""The PostgreSQL writer's JSON text for jsonb (postgres/step_writer.py ``jsonb_text``): jsonb refuses NUL and
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
from letta_nb.store.postgres.step_writer import jsonb_text


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
    import letta_nb.store.postgres.step_writer as step_writer

    walked: list[Any] = []
    monkeypatch.setattr(step_writer, "clean_json", lambda v: walked.append(v) or clean_json(v))
    clean = {"name": "send_message", "arguments": '{"message": "caf\u00e9 \U0001f600"}'}
    assert jsonb_text(clean) == json.dumps(clean) and walked == [clean]  # an emoji's escaped pair: one walk
    plain = {"name": "send_message", "arguments": '{"message": "hello"}'}
    assert jsonb_text(plain) == json.dumps(plain) and walked == [clean]  # no escape: no walk
