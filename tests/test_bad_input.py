"""A sweep of bad input over the public API: every refusal is a LettaNBError that names the argument.

Table-driven: each row calls one public method (``connect``; agents create, update, retrieve, delete;
messages, blocks, passages, tools, files; the ``%letta`` magics in an in-process IPython shell) with one
bad value -- None, numbers
where text belongs, empty and blank strings, a control character, a lone surrogate, very long strings,
negative and huge numbers, NaN, the wrong container, unknown choices -- and checks three things: the
exception is a ``LettaNBError`` (never a raw ``TypeError``, ``UnicodeEncodeError``, ``OverflowError``
or SQLAlchemy error) whose message names the argument and holds no lone surrogate; the store file's
rows are unchanged; and the client still works afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb._text import has_surrogates
from letta_nb.errors import LettaNBError
from tests.store_query import table_counts

LONE = "\ud800"
LONG = "x" * 100_000
HUGE = 10**30


def lookup(text: str) -> str:
    """Look something up.

    Args:
        text: What to look up.
    """
    return text


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[letta_nb.Client, Path]]:
    path = tmp_path_factory.mktemp("bad_input") / "s.db"
    client = letta_nb.connect(path)
    client.agents.create("sam")
    client.agents.messages.create("sam", "My name is Ada.")
    client.agents.passages.create("sam", "The MemGPT paper pages memory.", tags=["papers"])
    client.tools.upsert_from_function(lookup)
    try:
        yield client, path
    finally:
        client.close()


Call = Callable[[letta_nb.Client], Any]


def rows(name: str, make: Callable[[Any], Call], values: list[Any], needle: str) -> list[Any]:
    return [pytest.param(make(v), needle, id=f"{name}={v!r:.30}") for v in values]


TEXT_BAD = [None, 42, 3.5, "", " ", ["x"]]  # where a non-empty string is required
NAME_BAD = [*TEXT_BAD, "x\n", f"x{LONE}", "a\tb", LONG, "-x"]
COUNT_BAD = [None, 0, -1, 3.5, math.nan, True, "5", HUGE]  # where a positive integer is required
FLAG_BAD = [None, "no", 1, 0.0]
AGENT_BAD = [None, 42, 3.5, "", ["sam"], {"id": "sam"}, f"sam{LONE}", LONG, "sam\n"]

CASES = [
    # ---- agents -----------------------------------------------------------------------------------------
    *rows("create.name", lambda v: lambda c: c.agents.create(v), [v for v in NAME_BAD if v is not None], "name"),
    *rows("create.model", lambda v: lambda c: c.agents.create("n1", model=v),  # None: the default_model setting
          [42, "", "gpt-9", "offline?latency_ms=-1", "offline?tps=0", "offline?context_window=0",
           "offline?latency_ms=nan", "offline?nope=1", "openai/x?temperature=nan&base_url=http://127.0.0.1:9/v1",
           "openai/x?context_window=0&base_url=http://127.0.0.1:9/v1", "openai/x?timeout=5s", "openai/x?base_url=ftp://x",
           "openai/x?timeout=1&timeout=2", "openai/x y", f"offline{LONE}"], "model"),
    *rows("create.embedding", lambda v: lambda c: c.agents.create("n1", embedding=v),  # None: the setting's
          [42, "", "nope", "hash?dim=0", "hash?dim=-3", "hash?dim=2000000000", "hash?dim=3.5", "hash?size=3",
           "openai/x?dimensions=0&base_url=http://127.0.0.1:9/v1", "openai/x?oversize=cut&base_url=http://127.0.0.1:9/v1",
           "openai/x?adaptive=maybe&base_url=http://127.0.0.1:9/v1"], "embedding"),
    *rows("create.max_steps", lambda v: lambda c: c.agents.create("n1", max_steps=v), COUNT_BAD, "max_steps"),
    *rows("create.memory_blocks", lambda v: lambda c: c.agents.create("n1", memory_blocks=v),
          ["persona", 42, [42], [{"label": "p"}, {"label": "p"}], [{"label": "a b", "value": ""}],
           [{"label": f"p{LONE}", "value": ""}], [{"label": "p\n", "value": ""}], [{"label": "p", "value": 42}],
           [{"label": "p", "value": "", "limit": HUGE}], [{"label": "p", "value": "", "limit": math.nan}],
           [{"label": "p", "value": "", "limit": True}],
           [{"label": "p", "value": "", "description": 42}], [{"label": "p", "value": "", "read_only": "no"}],
           [{"label": "p", "value": "", "colour": "red"}]], "memory_blocks"),
    *rows("create.memory_blocks.value", lambda v: lambda c: c.agents.create("n1", memory_blocks=v),
          [[{"label": "p", "value": "xx", "limit": 1}]], "limit"),
    *rows("create.tools", lambda v: lambda c: c.agents.create("n1", tools=v),
          ["lookup", 42, [42], ["nope"], [None]], "tool"),
    *rows("create.system", lambda v: lambda c: c.agents.create("n1", system=v), [42, ["x"]], "system"),
    *rows("create.include_base_tools", lambda v: lambda c: c.agents.create("n1", include_base_tools=v), FLAG_BAD,
          "include_base_tools"),
    *rows("create.metadata", lambda v: lambda c: c.agents.create("n1", metadata=v),
          [[1], "x", {1: 2}, {"a": object()}, {"a": math.nan}, {"a": {1, 2}}], "metadata"),
    *rows("update.max_steps", lambda v: lambda c: c.agents.update("sam", max_steps=v),
          [v for v in COUNT_BAD if v is not None], "max_steps"),
    *rows("update.system", lambda v: lambda c: c.agents.update("sam", system=v), [42, ["x"]], "system"),
    *rows("update.metadata", lambda v: lambda c: c.agents.update("sam", metadata=v),
          [[1], {"a": object()}, {"a": math.nan}], "metadata"),
    *rows("update.model", lambda v: lambda c: c.agents.update("sam", model=v),
          [42, "gpt-9", "offline?tps=0", "hash?dim=0"], "model"),
    *rows("update.embedding", lambda v: lambda c: c.agents.update("sam", embedding=v),
          [42, "hash?dim=0", "hash?dim=2000000000"], "embedding"),
    *rows("update.agent", lambda v: lambda c: c.agents.update(v, system="x"), AGENT_BAD, "agent"),
    *rows("retrieve.agent", lambda v: lambda c: c.agents.retrieve(v), AGENT_BAD, "agent"),
    *rows("delete.agent", lambda v: lambda c: c.agents.delete(v), AGENT_BAD, "agent"),
    # ---- messages ---------------------------------------------------------------------------------------
    *rows("messages.create.input", lambda v: lambda c: c.agents.messages.create("sam", v), TEXT_BAD, "input"),
    *rows("messages.create.messages", lambda v: lambda c: c.agents.messages.create("sam", messages=v),
          ["hi", [], [42], [{"role": "system", "content": "x"}], [{"role": "user", "content": 42}],
           [{"role": "user", "content": [42]}], [{"role": "user", "content": [{"text": 42}]}]], "messages"),
    *rows("messages.create.agent", lambda v: lambda c: c.agents.messages.create(v, "hi"), AGENT_BAD, "agent"),
    *rows("messages.stream.input", lambda v: lambda c: list(c.agents.messages.stream("sam", v)), TEXT_BAD, "input"),
    *rows("messages.stream.agent", lambda v: lambda c: list(c.agents.messages.stream(v, "hi")), AGENT_BAD, "agent"),
    *rows("messages.list.limit", lambda v: lambda c: c.agents.messages.list("sam", limit=v),
          [v for v in COUNT_BAD if v is not None], "limit"),
    # ---- blocks -----------------------------------------------------------------------------------------
    *rows("blocks.retrieve.label", lambda v: lambda c: c.agents.blocks.retrieve("sam", v),
          [None, 42, "", "nope", f"human{LONE}", LONG], "memory block"),
    *rows("blocks.update.value", lambda v: lambda c: c.agents.blocks.update("sam", "human", value=v),
          [42, ["x"]], "value"),
    *rows("blocks.update.value", lambda v: lambda c: c.agents.blocks.update("sam", "human", value=v), ["x" * 6000],
          "limit"),
    *rows("blocks.update.limit", lambda v: lambda c: c.agents.blocks.update("sam", "human", limit=v),
          [v for v in COUNT_BAD if v is not None], "limit"),
    *rows("blocks.update.description", lambda v: lambda c: c.agents.blocks.update("sam", "human", description=v),
          [42, ["x"]], "description"),
    *rows("blocks.update.read_only", lambda v: lambda c: c.agents.blocks.update("sam", "human", read_only=v),
          ["no", 1], "read_only"),
    # ---- passages ---------------------------------------------------------------------------------------
    # a list of texts is a batch (one embedding call, one commit); each of its texts must be one
    *rows("passages.create.text", lambda v: lambda c: c.agents.passages.create("sam", v),
          [*(v for v in TEXT_BAD if v != ["x"]), [], ["x", ""], ["x", 42]], "text"),
    *rows("passages.create.tags", lambda v: lambda c: c.agents.passages.create("sam", "x", tags=v),
          ["papers", 42, [42], [""], [None]], "tags"),
    *rows("passages.search.query", lambda v: lambda c: c.agents.passages.search("sam", v), TEXT_BAD, "query"),
    *rows("passages.search.top_k", lambda v: lambda c: c.agents.passages.search("sam", "x", top_k=v), COUNT_BAD,
          "top_k"),
    *rows("passages.search.tag_match_mode", lambda v: lambda c: c.agents.passages.search("sam", "x", tag_match_mode=v),
          [None, 42, "some", ""], "tag_match_mode"),
    *rows("passages.search.start_datetime", lambda v: lambda c: c.agents.passages.search("sam", "x", start_datetime=v),
          [42, "yesterday", ["2024"]], "start_datetime"),
    *rows("passages.search.tags", lambda v: lambda c: c.agents.passages.search("sam", "x", tags=v),
          ["papers", [42]], "tags"),
    *rows("passages.delete.passage_id", lambda v: lambda c: c.agents.passages.delete("sam", v),
          [*TEXT_BAD, "nope", f"p{LONE}"], "passage"),
    # ---- tools ------------------------------------------------------------------------------------------
    *rows("tools.upsert.func", lambda v: lambda c: c.tools.upsert_from_function(v), [None, 42, "lookup"], "func"),
    *rows("tools.upsert.name", lambda v: lambda c: c.tools.upsert_from_function(lookup, name=v),
          [42, "", " ", "a b", "f\n", f"f{LONE}", "x" * 65, "9lives", "send_message"], "name"),
    *rows("tools.upsert.timeout", lambda v: lambda c: c.tools.upsert_from_function(lookup, timeout=v),
          ["5", 0, -1, math.nan, math.inf, True, 1e300, [5]], "timeout"),
    *rows("tools.upsert.parallel_safe", lambda v: lambda c: c.tools.upsert_from_function(lookup, parallel_safe=v),
          FLAG_BAD, "parallel_safe"),
    *rows("agents.tools.attach", lambda v: lambda c: c.agents.tools.attach("sam", v), [None, 42, "nope", ""], "tool"),
    *rows("agents.tools.detach", lambda v: lambda c: c.agents.tools.detach("sam", v), [None, 42, "nope"], "tool"),
    *rows("files.delete.path", lambda v: lambda c: c.agents.files.delete("sam", v), [None, 42, ""], "path"),
    *rows("files.delete.path", lambda v: lambda c: c.agents.files.delete("sam", v), ["nope.txt"], "uploaded file"),
]


@pytest.mark.parametrize(("make_call", "needle"), CASES)
def test_bad_input_is_a_letta_error_naming_the_argument_and_writes_nothing(store, make_call: Call, needle: str) -> None:
    client, path = store
    before = table_counts(path)
    with pytest.raises(LettaNBError) as info:
        make_call(client)
    message = str(info.value)
    assert needle in message, f"the message should name {needle!r}: {message}"
    assert not has_surrogates(message)
    assert len(message) < 2000  # a very long bad value is not echoed whole
    assert table_counts(path) == before
    assert client.agents.retrieve("sam").name == "sam"  # the client still answers


@pytest.mark.parametrize(("kwargs", "needle"), [
    pytest.param({"where": v}, "where", id=f"where={v!r:.30}") for v in (42, 3.5, [1], "", " ", "x\n.db", f"{LONE}.db")
] + [
    pytest.param({"where": ":memory:", "api_keys": v}, "api_keys", id=f"api_keys={v!r:.30}")
    for v in ("sk-1", {"openai": 42}, {"openai": ""}, {"openai": "sk-1\n"}, {"openai": f"sk-{LONE}"}, {1: "k"})
])
def test_connect_refuses_bad_arguments_before_starting(kwargs: dict[str, Any], needle: str) -> None:
    import threading

    threads = threading.active_count()
    with pytest.raises(LettaNBError) as info:
        letta_nb.connect(kwargs.pop("where"), **kwargs)
    assert needle in str(info.value) and not has_surrogates(str(info.value))
    assert "sk-1" not in str(info.value)  # a key is never echoed
    assert threading.active_count() == threads  # no runtime thread left behind


SECRET = "sk-live-0123456789abcdef"


@pytest.mark.parametrize("spec", [
    f"openai/gpt-4o?apikey={SECRET}", f"openai/gpt-4o?token={SECRET}", f"openai/gpt-4o?api-key={SECRET}",
    f"openai/gpt-4o?api_key={SECRET}", f"openai/gpt-4o?tmeout=5&x={SECRET}", f"openai/gpt-4o?{SECRET}",
    f"openai/gpt-4o&api_key={SECRET}", f"ollama/llama3.2?password={SECRET}", f"offline?apikey={SECRET}",
    f"offline?latency_ms={SECRET}", f"openai/x?base_url={SECRET}", f"nope/x?key={SECRET}", f"anthropic?{SECRET}=1",
])
@pytest.mark.parametrize("argument", ["model", "embedding"])
def test_spec_errors_never_echo_option_values(store, spec: str, argument: str) -> None:
    client, path = store
    before = table_counts(path)
    with pytest.raises(LettaNBError) as info:
        client.agents.create("n1", **{argument: spec.replace("offline", "hash") if argument == "embedding" else spec})
    assert SECRET not in str(info.value) and SECRET[:12] not in str(info.value), str(info.value)
    assert SECRET not in repr(info.value)
    assert table_counts(path) == before


# ---- the magics -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shell(store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    from letta_nb.notebook._session import NotebookSession, current_session, set_session

    client, _ = store
    mp = pytest.MonkeyPatch()
    mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    with capture_output():
        sh.run_line_magic("load_ext", "letta_nb")
    own = current_session()
    set_session(NotebookSession(client=client))  # the magics talk to the sweep's store (borrowed, not closed)
    with capture_output():
        sh.run_line_magic("letta", "use sam")
    try:
        yield sh
    finally:
        set_session(own)
        sh.run_line_magic("unload_ext", "letta_nb")
        mp.undo()
        InteractiveShell.clear_instance()


@pytest.mark.parametrize(("line", "needle"), [pytest.param(line, needle, id=ascii(line)[:40]) for line, needle in [
    ("create 'x\\ty'", "name"), (f"create x{LONE}", "name"), ("create " + "x" * 300, "name"),
    ("create n1 --model 'offline?latency_ms=-1'", "latency_ms"), ("create n1 --embedding 'hash?dim=0'", "dim"),
    (f"create n1 --model 'openai/x?apikey={SECRET}'", "apikey"), ("create n1 --model 42", "model"),
    (f"use sam{LONE}", "agent"), ("use ''", "agent"), ("delete nope", "agent"),
    ("memory set nope x", "memory block"), ("memory set human " + "x" * 6000, "limit"),
    ("archival search x -k 0", "-k"), ("archival search x -k 99999999999999999999", "top_k"),
    ("archival insert ' '", "text"), (f"tool add f{LONE}", "function"), ("stats nope", "kind"), (LONE, "subcommand"),
]])
def test_magics_turn_bad_input_into_a_usage_error(store, shell, line: str, needle: str) -> None:
    from IPython.core.error import UsageError

    _, path = store
    before = table_counts(path)
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("letta", line)
    message = str(info.value)
    assert needle in message and not has_surrogates(message) and SECRET not in message, message
    assert table_counts(path) == before


@pytest.mark.parametrize(("line", "body", "needle"), [
    ("nope", "hi", "agent"), (f"sam{LONE}", "hi", "agent"), ("sam -o 1x", "hi", "-o"), ("sam", "   ", "message"),
    ("sam --format xml", "hi", "format"),
])
def test_cell_magic_turns_bad_input_into_a_usage_error(store, shell, line: str, body: str, needle: str) -> None:
    from IPython.core.error import UsageError

    _, path = store
    before = table_counts(path)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("letta", line, body)
    assert needle in str(info.value) and not has_surrogates(str(info.value)), str(info.value)
    assert table_counts(path) == before
