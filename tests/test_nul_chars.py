"""NUL characters (``"\\x00"``): the same behaviour on SQLite and PostgreSQL, nothing half-written.

PostgreSQL's text and jsonb refuse NUL (SQLite keeps it), so a message, block, passage or tag holding one
used to fail at commit on PostgreSQL only, after the model was paid for. The policy (letta_nb/_text.py):
text a user passes to the API is refused before anything is written, the error naming the argument and
the position; text that arises inside a turn (the model's tool arguments, a tool's result) has each NUL
stored as U+FFFD, so the turn is stored whole. Every test runs on both backends, on real stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agent_helpers import call

import letta_nb
from letta_nb._text import clean_json, clean_text
from letta_nb.errors import InvalidArgumentError

NUL = "\x00"
FFFD = "\ufffd"


@pytest.fixture(params=["sqlite", "postgres"])
def nul_client(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[letta_nb.Client]:
    url = tmp_path / "s.db" if request.param == "sqlite" else request.getfixturevalue("pg_store_url")
    with letta_nb.connect(url) as c:
        yield c


def _snapshot(c: letta_nb.Client) -> tuple[Any, ...]:
    agents = c.agents.list()
    return (sorted(a.name for a in agents),
            [(a.name, a.last_seq, [(b.label, b.value) for b in c.agents.retrieve(a.id).blocks],
              [p.text for p in c.agents.passages.list(a.id)], len(c.agents.messages.list(a.id))) for a in agents])


REFUSED: list[tuple[str, Callable[[letta_nb.Client], Any], str, int]] = [
    ("message", lambda c: c.agents.messages.create("sam", f"hello{NUL}world"), "input", 5),
    ("messages-list", lambda c: c.agents.messages.create("sam", messages=[
        {"role": "user", "content": "ok"}, {"role": "user", "content": f"{NUL}x"}]), "messages[1]['content']", 0),
    ("stream", lambda c: list(c.agents.messages.stream("sam", f"ab{NUL}")), "input", 2),
    ("block-update", lambda c: c.agents.blocks.update("sam", "human", value=f"Name: Ada{NUL}"), "value", 9),
    ("passage", lambda c: c.agents.passages.create("sam", f"paging{NUL} memory"), "text", 6),
    ("passage-tag", lambda c: c.agents.passages.create("sam", "fine", tags=["ok", f"t{NUL}"]), "tags[1]", 1),
    ("create-block", lambda c: c.agents.create("other", memory_blocks=[
        {"label": "persona", "value": f"p{NUL}"}]), "value", 1),
    ("create-system", lambda c: c.agents.create("other", system=f"Be brief.{NUL}"), "system", 9),
    ("create-metadata", lambda c: c.agents.create("other", metadata={"note": ["a", f"b{NUL}"]}),
     "metadata['note'][1]", 1),
]


@pytest.mark.parametrize("make,argument,position", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_user_text_with_nul_is_refused_naming_argument_and_position(nul_client, make, argument, position):
    c = nul_client
    c.agents.create("sam", model="offline")
    c.agents.passages.create("sam", "a first passage")
    c.agents.messages.create("sam", "My name is Ada.")
    before = _snapshot(c)
    with pytest.raises(InvalidArgumentError) as info:
        make(c)
    message = str(info.value)
    assert argument in message and f"position {position}" in message and "\\x00" in message, message
    assert NUL not in message  # the error itself prints and logs cleanly
    assert _snapshot(c) == before  # nothing written
    r = c.agents.messages.create("sam", "What is my name?")  # and the agent still works
    assert r.text


def echo_nul(text: str) -> str:
    """Return the text with NULs around it (a tool reading a binary file does this).

    Args:
        text: Anything.
    """
    return f"{NUL}{text}{NUL}"


def test_nul_made_inside_a_turn_is_stored_as_fffd_and_the_turn_kept(nul_client):
    c = nul_client
    c.agents.create("sam", model="offline", tools=[echo_nul])
    # the model's own tool arguments carry a \u0000 escape (the user's message is plain ASCII)
    c.agents.messages.create("sam", call("archival_memory_insert", raw='{"content": "fact \\u0000 here"}'))
    assert [p.text for p in c.agents.passages.list("sam")] == [f"fact {FFFD} here"]
    r = c.agents.messages.create("sam", call("echo_nul", text="hi"))
    tool = [m for m in r.messages if m.role == "tool" and m.name == "echo_nul"]
    assert tool and tool[0].content == f"{FFFD}hi{FFFD}" and tool[0].status == "success"
    stored = [m.content for m in c.agents.messages.list("sam") if m.role == "tool" and m.name == "echo_nul"]
    assert stored == [f"{FFFD}hi{FFFD}"]


def test_clean_text_and_clean_json_replace_nul():
    assert clean_text(f"a{NUL}b{NUL}") == f"a{FFFD}b{FFFD}"
    assert clean_text("plain") == "plain"
    assert clean_json({f"k{NUL}": [f"v{NUL}", 1]}) == {f"k{FFFD}": [f"v{FFFD}", 1]}
