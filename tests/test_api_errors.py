"""The public API's errors: the right class, a helpful message, and nothing written.

Errors are checked the way a user meets them: the exception class (always a ``LettaNBError``), a message
that names the problem and the fix, close-match suggestions, and -- just as important -- that a rejected
call wrote nothing (row counts of the real store file before and after).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

import letta_nb
from letta_nb.errors import (
    AgentNotFoundError,
    AlreadyExistsError,
    BlockLimitError,
    BlockNotFoundError,
    InvalidArgumentError,
    LettaNBError,
    ModelNotFoundError,
    ToolNotFoundError,
    ToolSchemaError,
)
from tests.agent_helpers import repeat, word_count
from tests.store_query import table_counts

# ---- tools whose schemas are refused or accepted (module level: their source is stored) -----------------


def takes_a_set(items: set) -> int:
    """Sets are not JSON."""
    return len(items)


class Point:
    pass


def takes_a_point(p: Point) -> int:
    """A class that JSON schema cannot describe."""
    return 0


def takes_optional(x: Optional[int] = None) -> int:  # noqa: UP045 - the typing spelling on purpose
    """Optional is fine."""
    return x or 0


# ---- errors: the right class, a helpful message, nothing written ----------------------------------------


def test_unknown_agent_suggests_close_names(client: letta_nb.Client) -> None:
    client.agents.create("sam")
    with pytest.raises(AgentNotFoundError) as info:
        client.agents.retrieve("sma")
    assert info.value.suggestions == ["sam"]
    assert "Did you mean 'sam'?" in str(info.value)
    for call in (lambda: client.agents.messages.create("sma", "hi"), lambda: client.agents.blocks.list("sma"),
                 lambda: client.agents.passages.search("sma", "x"), lambda: client.agents.delete("sma")):
        with pytest.raises(AgentNotFoundError, match="Did you mean 'sam'"):
            call()
    with pytest.raises(AgentNotFoundError, match="Known agents: 'sam'"):
        client.agents.retrieve("completely-different")
    assert isinstance(info.value, LookupError)


def test_create_errors_write_nothing(client: letta_nb.Client, db_path: Path) -> None:
    client.agents.create("sam")
    before = table_counts(db_path)
    names_before = [a.name for a in client.agents.list()]
    cases: list[tuple[type[LettaNBError], str, dict[str, Any]]] = [
        (AlreadyExistsError, "already exists", {"name": "sam"}),
        (InvalidArgumentError, "name must be", {"name": ""}),
        (InvalidArgumentError, "name must be", {"name": "-dash-first"}),
        (InvalidArgumentError, "name must be", {"name": "a/b"}),
        (InvalidArgumentError, "name must be", {"name": "x" * 201}),
        (InvalidArgumentError, "name must be", {"name": 42}),
        (InvalidArgumentError, "max_steps", {"name": "ok", "max_steps": 0}),
        (InvalidArgumentError, r"unknown keys \['lable'\]", {"name": "ok", "memory_blocks": [{"lable": "human"}]}),
        (BlockLimitError, "over its limit of 5", {"name": "ok", "memory_blocks": [
            {"label": "human", "value": "toolong", "limit": 5}]}),
        (InvalidArgumentError, "two blocks labelled 'human'", {"name": "ok", "memory_blocks": [
            {"label": "human", "value": ""}, {"label": "human", "value": "x"}]}),
        (InvalidArgumentError, "identifier-like", {"name": "ok", "memory_blocks": [{"label": "my block"}]}),
        (InvalidArgumentError, "must be a string", {"name": "ok", "memory_blocks": [{"label": "h", "value": 3}]}),
        (InvalidArgumentError, "list of dicts", {"name": "ok", "memory_blocks": "human"}),
        (ModelNotFoundError, "'offline'", {"name": "ok", "model": "gpt-9"}),
        (ModelNotFoundError, "Did you mean 'offline'", {"name": "ok", "model": "ofline"}),
        (InvalidArgumentError, "latncy_ms", {"name": "ok", "model": "offline?latncy_ms=5"}),
        (InvalidArgumentError, "tps", {"name": "ok", "model": "offline?tps=0"}),
        (InvalidArgumentError, "context_window", {"name": "ok", "model": "offline?context_window=big"}),
        (InvalidArgumentError, "hash", {"name": "ok", "embedding": "nope"}),
        (ToolNotFoundError, "No tool named 'nope'", {"name": "ok", "tools": ["nope"]}),
        (ToolSchemaError, "takes_a_set", {"name": "ok", "tools": [takes_a_set]}),
    ]
    for error, fragment, kwargs in cases:
        with pytest.raises(error, match=fragment) as info:
            client.agents.create(**kwargs)
        assert isinstance(info.value, LettaNBError), kwargs
        assert table_counts(db_path) == before, f"{kwargs} wrote something"
    assert [a.name for a in client.agents.list()] == names_before
    with pytest.raises(ModelNotFoundError) as info:
        client.agents.create("ok", model="gpt-9")
    assert "offline" in str(info.value) and "API key" in str(info.value)


def test_failed_create_registers_no_tools(client: letta_nb.Client, db_path: Path) -> None:
    client.agents.create("sam")
    before = table_counts(db_path)
    with pytest.raises(AlreadyExistsError):
        client.agents.create("sam", tools=[word_count])
    with pytest.raises(ToolNotFoundError):
        client.agents.create("bob", tools=[repeat, "nope"])
    assert "word_count" not in client.tools.list() and "repeat" not in client.tools.list()
    assert table_counts(db_path) == before


def test_tool_schema_errors(client: letta_nb.Client, db_path: Path) -> None:
    before = table_counts(db_path)
    with pytest.raises(ToolSchemaError, match="items") as info:
        client.tools.upsert_from_function(takes_a_set)
    assert isinstance(info.value, LettaNBError) and isinstance(info.value, TypeError)
    with pytest.raises(ToolSchemaError, match="Point"):
        client.tools.upsert_from_function(takes_a_point)
    with pytest.raises(ToolSchemaError, match="lambda"):
        client.tools.upsert_from_function(lambda x: x)
    with pytest.raises(InvalidArgumentError, match="base tool"):
        client.tools.upsert_from_function(word_count, name="send_message")
    with pytest.raises(InvalidArgumentError, match="must be a Python function"):
        client.tools.upsert_from_function("word_count")
    assert table_counts(db_path) == before
    spec = client.tools.upsert_from_function(takes_optional)
    assert spec.parameters["properties"]["x"]
    assert "takes_optional" in client.tools.list()


def test_blocks_update_errors_leave_the_block_unchanged(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam", memory_blocks=[{"label": "human", "value": "Name: Ada", "limit": 20}])
    with pytest.raises(BlockLimitError) as info:
        client.agents.blocks.update(agent, "human", value="x" * 21)
    assert (info.value.label, info.value.length, info.value.limit) == ("human", 21, 20)
    assert "raise the block's limit" in str(info.value)
    with pytest.raises(BlockLimitError):
        client.agents.blocks.update(agent, "human", limit=3)  # the current value no longer fits
    with pytest.raises(InvalidArgumentError, match="limit"):
        client.agents.blocks.update(agent, "human", limit=0)
    with pytest.raises(InvalidArgumentError, match="string"):
        client.agents.blocks.update(agent, "human", value=5)
    with pytest.raises(BlockNotFoundError, match="Did you mean 'human'"):
        client.agents.blocks.update(agent, "humn", value="x")
    with pytest.raises(BlockNotFoundError, match="Did you mean 'human'"):
        client.agents.blocks.retrieve(agent, "humam")
    block = client.agents.blocks.retrieve(agent, "human")
    assert (block.value, block.limit) == ("Name: Ada", 20)

    # A valid update lands, in the store and in what the agent sees next turn.
    updated = client.agents.blocks.modify(agent, "human", value="Name: Grace", limit=100, description="Who.")
    assert (updated.value, updated.limit, updated.description) == ("Name: Grace", 100, "Who.")
    r = client.agents.messages.create(agent, "What is my name?")
    assert "Name: Grace" in r.text


def test_message_input_errors_write_nothing(client: letta_nb.Client, db_path: Path) -> None:
    agent = client.agents.create("sam")
    before = table_counts(db_path)
    bad: list[dict[str, Any]] = [
        {"input": ""},
        {"input": "   \n"},
        {"input": None},
        {"input": 42},
        {"input": "hi", "messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {"messages": []},
        {"messages": [{"role": "user", "content": ""}]},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            client.agents.messages.create(agent, **kwargs)
        with pytest.raises(InvalidArgumentError):
            list(client.agents.messages.stream(agent, **kwargs))
    with pytest.raises(InvalidArgumentError, match="limit"):
        client.agents.messages.list(agent, limit=0)
    assert table_counts(db_path) == before
    assert client.agents.messages.list(agent) == []
    assert len(client.runtime.locks) == 0


def test_closed_client_refuses_work(db_path: Path) -> None:
    c = letta_nb.connect(db_path)
    c.agents.create("sam")
    c.close()
    c.close()  # idempotent
    assert "closed" in repr(c)
    with pytest.raises(LettaNBError, match="closed"):
        c.agents.list()


def test_hash_dim_is_bounded_by_what_the_store_can_index(client: letta_nb.Client, db_path: Path) -> None:
    client.agents.create("wide", embedding="hash?dim=8192")  # the largest dimension sqlite-vec's vec0 indexes
    p = client.agents.passages.create("wide", "The MemGPT paper pages memory.")
    assert [h.id for h in client.agents.passages.search("wide", "MemGPT paging", top_k=1)] == [p.id]
    before = table_counts(db_path)
    for dim in ("8193", "0", "-3", "2000000000"):  # refused when the agent is created, not at its first insert
        with pytest.raises(InvalidArgumentError, match="'dim' in 'hash\\?dim=...' is out of range: expected an "
                                                       "integer from 1 to 8,192"):
            client.agents.create("too", embedding=f"hash?dim={dim}")
    assert table_counts(db_path) == before


def test_wrong_types_get_errors_that_show_the_fix(client: letta_nb.Client) -> None:
    with pytest.raises(InvalidArgumentError,
                       match=r"timeout must be a number of seconds .* timeout=5 \(not timeout='5'\)"):
        client.tools.upsert_from_function(takes_optional, timeout="5")
    with pytest.raises(InvalidArgumentError, match=r"printable text on one line: 'x\\n' .* trailing newline"):
        client.agents.create("x\n")
    assert "takes_optional" not in client.tools.list() and client.agents.list() == []
