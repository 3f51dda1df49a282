"""The public API: its sync/async parity and what it keeps in the store (errors: test_api_errors.py; ``__all__``
and docstrings: test_public_api.py; what a type checker sees: test_typed_api.py).

Errors are checked the way a user meets them: the exception class (always a ``LettaNBError``), a message
that names the problem and the fix, close-match suggestions, and -- just as important -- that a rejected
call wrote nothing. The store is inspected with plain ``sqlite3`` on the real file.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb import client as client_module
from letta_nb._twins import Twin
from letta_nb.errors import (
    AgentNotFoundError,
    AlreadyExistsError,
    InvalidArgumentError,
    ToolNotFoundError,
)
from tests.agent_helpers import record_prompts, repeat, word_count
from tests.store_query import count

RESOURCES = [client_module.Agents, client_module.Messages, client_module.Blocks, client_module.Passages,
             client_module.Files, client_module.AgentTools, client_module.Tools, client_module.SharedBlocks,
             client_module.Client]
# close() stops the runtime thread an awaitable twin would run on: it is sync only.
SYNC_ONLY = {(client_module.Client, "close"), (client_module.Client, "serve")}  # serve: starts a thread


# ---- the public surface ---------------------------------------------------------------------------------


def _public_methods(cls: type) -> dict[str, Any]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def _sync_names(cls: type) -> list[str]:
    methods = _public_methods(cls)
    return sorted(n for n in methods if not (n.startswith("a") and n[1:] in methods) and (cls, n) not in SYNC_ONLY)


def _twin_names(cls: type) -> set[str]:
    """The methods declared as ``sync_twin``/``async_twin`` descriptors in the class body."""
    return {name for klass in cls.__mro__ for name, v in vars(klass).items() if isinstance(v, Twin)}


@pytest.mark.parametrize("cls", RESOURCES, ids=lambda c: c.__name__)
def test_every_sync_method_has_an_async_twin_with_the_same_signature(cls: type) -> None:
    methods = _public_methods(cls)
    sync_names = _sync_names(cls)
    twins = _twin_names(cls)
    assert twins, f"{cls.__name__} declares no twins"
    assert twins <= set(methods)
    for name in twins:  # a twin hands out a function named after its attribute (modify: an alias of update)
        fn = methods[name]
        assert fn.__name__ == name or (name, fn.__name__) in {("modify", "update"), ("amodify", "aupdate")}, name
    for name in sync_names:
        twin = methods.get(f"a{name}")
        assert twin is not None, f"{cls.__name__}.{name} has no async twin a{name}"
        sync = methods[name]
        if name == "stream":  # Iterator vs AsyncIterator: only the return annotation may differ
            assert inspect.signature(twin).parameters == inspect.signature(sync).parameters
            # typed with overloads (letta_chunks=True yields LettaChunk); the bodies are generators
            assert inspect.isgeneratorfunction(cls._stream) and inspect.isasyncgenfunction(cls._astream)
            assert twin.__doc__ == sync.__doc__
            continue
        assert inspect.signature(twin) == inspect.signature(sync), f"{cls.__name__}.a{name}"
        assert not inspect.iscoroutinefunction(sync), f"{cls.__name__}.{name} must block, not return a coroutine"
        assert inspect.iscoroutinefunction(twin), f"{cls.__name__}.a{name} must be awaitable"
        assert twin.__doc__ == sync.__doc__, f"{cls.__name__}.a{name} doc differs"
        assert twin.__name__ == "a" + sync.__name__  # (modify/amodify are aliases of update/aupdate)


def test_stream_and_astream_share_their_doc() -> None:
    assert client_module.Messages.astream.__doc__ == client_module.Messages.stream.__doc__


def test_async_api_gives_the_same_results_as_sync(client: letta_nb.Client) -> None:
    sync_agent = client.agents.create("sync-agent")
    sync_r = client.agents.messages.create(sync_agent, "My name is Ada.")
    sync_q = client.agents.messages.create(sync_agent, "What is my name?")
    client.agents.passages.create(sync_agent, "Ada studies batching.", tags=["study"])

    async def main() -> dict[str, Any]:
        a = await client.agents.acreate("async-agent")
        r1 = await client.agents.messages.acreate(a, "My name is Ada.")
        r2 = await client.agents.messages.acreate(a.id, "What is my name?")
        await client.agents.passages.acreate(a, "Ada studies batching.", tags=["study"])
        # Two agents at once from one asyncio loop.
        g1, g2 = await asyncio.gather(client.agents.messages.acreate(a, "hello"),
                                      client.agents.messages.acreate(sync_agent, "hello"))
        with pytest.raises(AgentNotFoundError):
            await client.agents.aretrieve("no-such-agent")
        return {
            "agent": await client.agents.aretrieve("async-agent"),
            "agents": await client.agents.alist(),
            "r1": r1, "r2": r2, "g": (g1, g2),
            "recall": await client.agents.messages.alist(a),
            "human": await client.agents.blocks.aretrieve(a, "human"),
            "blocks": await client.agents.blocks.alist(a),
            "hits": await client.agents.passages.asearch(a, "batching"),
            "tools": await client.agents.tools.alist(a),
            "all_tools": await client.tools.alist(),
        }

    out = asyncio.run(main())
    assert out["agent"].name == "async-agent"
    assert [a.name for a in out["agents"]] == [a.name for a in client.agents.list()] == ["sync-agent", "async-agent"]
    assert out["r1"].text == sync_r.text and out["r2"].text == sync_q.text
    assert [m.message_type for m in out["r1"].messages] == [m.message_type for m in sync_r.messages]
    assert [s.tool_names for s in out["r1"].steps] == [s.tool_names for s in sync_r.steps]
    assert out["g"][0].text == out["g"][1].text
    assert [m.text for m in out["recall"]] == [m.text for m in client.agents.messages.list(sync_agent)]
    assert out["human"].value == client.agents.blocks.retrieve(sync_agent, "human").value == "Name: Ada"
    assert [b.label for b in out["blocks"]] == [b.label for b in client.agents.blocks.list(sync_agent)]
    assert [p.text for p in out["hits"]] == [p.text for p in client.agents.passages.search(sync_agent, "batching")]
    assert out["tools"] == client.agents.tools.list(sync_agent)
    assert out["all_tools"] == client.tools.list()


def test_letta_client_style_messages_argument(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam")
    r = client.agents.messages.create(agent, messages=[{"role": "user", "content": "My name is Ada."}])
    assert r.messages[0].content == "My name is Ada."
    r = client.agents.messages.create(
        agent, messages=[{"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}])
    assert "Name: Ada" in r.text


# ---- delete, passages, tools across stores, secrets -----------------------------------------------------


def test_delete_removes_everything_of_the_agent_and_frees_the_name(client: letta_nb.Client, db_path: Path) -> None:
    keep = client.agents.create("keep")
    client.agents.messages.create(keep, "My name is Kim.")
    agent = client.agents.create("doomed", tools=[word_count])
    client.agents.messages.create(agent, "My name is Ada.")
    client.agents.messages.create(agent, "remember that the code is 7")
    client.agents.passages.create(agent, "A passage.", tags=["t"])
    tables = ("messages", "blocks", "passages", "steps", "agent_tools")
    counts = {t: count(db_path, t, agent.id) for t in tables}
    assert all(counts.values()), counts
    kept = {t: count(db_path, t, keep.id) for t in tables}

    client.agents.delete("doomed")
    assert {t: count(db_path, t, agent.id) for t in tables} == dict.fromkeys(tables, 0)
    assert count(db_path, "agents") == 1
    assert {t: count(db_path, t, keep.id) for t in tables} == kept  # the other agent is untouched
    assert "word_count" in client.tools.list()  # tools are shared, not the agent's
    with pytest.raises(AgentNotFoundError):
        client.agents.retrieve("doomed")
    with pytest.raises(AgentNotFoundError):
        client.agents.retrieve(agent.id)

    again = client.agents.create("doomed")
    assert again.id != agent.id
    assert client.agents.messages.list(again) == [] and client.agents.passages.list(again) == []
    assert client.agents.blocks.retrieve(again, "human").value == ""
    r = client.agents.messages.create(again, "What is my name?")
    assert "Ada" not in r.text


def test_passages_create_search_filter_delete(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam")
    other = client.agents.create("other")
    texts = {
        "batch": ("Dynamic batching groups requests to raise GPU throughput.", ["ml", "systems"]),
        "birds": ("Penguins cannot fly but swim very well.", ["nature"]),
        "tea": ("Green tea is brewed at eighty degrees.", ["food", "nature"]),
    }
    made = {k: client.agents.passages.create(agent, text, tags=tags) for k, (text, tags) in texts.items()}
    client.agents.passages.create(other, "Dynamic batching groups requests to raise GPU throughput.")
    assert made["tea"].tags == ("food", "nature") and made["tea"].agent_id == agent.id
    assert [p.text for p in client.agents.passages.list(agent)] == [t for t, _ in texts.values()]

    hits = client.agents.passages.search(agent, "batching requests GPU throughput", top_k=3)
    assert hits[0].id == made["batch"].id
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.agent_id == agent.id for h in hits)  # never another agent's passages
    assert [h.id for h in client.agents.passages.search(agent, "penguins swim", top_k=1)] == [made["birds"].id]

    any_nature = client.agents.passages.search(agent, "x", tags=["nature", "ml"], top_k=10)
    assert {h.id for h in any_nature} == {made["batch"].id, made["birds"].id, made["tea"].id}
    all_nature = client.agents.passages.search(agent, "x", tags=["nature", "food"], tag_match_mode="all")
    assert [h.id for h in all_nature] == [made["tea"].id]
    assert client.agents.passages.search(agent, "x", tags=["nope"]) == []
    with pytest.raises(InvalidArgumentError, match="tag_match_mode"):
        client.agents.passages.search(agent, "x", tag_match_mode="some")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        client.agents.passages.search(agent, "x", top_k=0)
    with pytest.raises(InvalidArgumentError):
        client.agents.passages.create(agent, "   ")
    with pytest.raises(InvalidArgumentError, match="tags"):
        client.agents.passages.create(agent, "text", tags=["ok", 3])

    client.agents.passages.delete(agent, made["birds"].id)
    assert made["birds"].id not in [p.id for p in client.agents.passages.list(agent)]
    with pytest.raises(InvalidArgumentError, match="no passage"):
        client.agents.passages.delete(agent, made["birds"].id)
    other_passage = client.agents.passages.list(other)[0]
    with pytest.raises(InvalidArgumentError):
        client.agents.passages.delete(agent, other_passage.id)  # not this agent's
    assert len(client.agents.passages.list(other)) == 1

    # The agent finds them too.
    r = client.agents.messages.create(agent, "What is green tea brewed at?")
    assert "eighty degrees" in r.text


def test_passage_tags_given_as_a_string_are_rejected(client: letta_nb.Client) -> None:
    agent = client.agents.create("sam")
    with pytest.raises(InvalidArgumentError, match="tags"):
        client.agents.passages.create(agent, "text", tags="nature")
    assert client.agents.passages.list(agent) == []


def test_tool_registered_in_one_client_works_after_reopening(db_path: Path) -> None:
    with letta_nb.connect(db_path) as c:
        spec = c.tools.upsert_from_function(repeat, parallel_safe=True, timeout=5)
        assert "def repeat" in spec.source
        c.agents.create("sam", tools=["repeat", word_count])
        r = c.agents.messages.create("sam", '/call repeat {"text": "hi"}')
        assert [m.content for m in r.messages if m.role == "tool" and m.name == "repeat"] == ["hi hi"]

    with letta_nb.connect(db_path) as c:
        assert {"repeat", "word_count"} <= set(c.tools.list())
        assert {"repeat", "word_count"} <= set(c.agents.tools.list("sam"))
        rehydrated = c._thread.run(c.runtime.tool_spec("repeat"))
        assert rehydrated.func is not repeat  # built from the stored source, not this module
        assert rehydrated.parallel_safe and rehydrated.timeout == 5
        r = c.agents.messages.create("sam",
                                     '/call repeat {"text": "ho", "times": 3}\n/call word_count {"text": "a b c"}')
        results = [(m.name, m.status, m.content) for m in r.messages if m.role == "tool" and m.name != "send_message"]
        assert results == [("repeat", "success", "ho ho ho"), ("word_count", "success", "3")]

        # attach / detach round-trip in the reopened store
        assert "repeat" not in c.agents.tools.detach("sam", "repeat")
        with pytest.raises(InvalidArgumentError, match="has no tool 'repeat'"):
            c.agents.tools.detach("sam", "repeat")
        assert "repeat" in c.agents.tools.attach("sam", "repeat")
        with pytest.raises(ToolNotFoundError, match="Did you mean 'repeat'"):
            c.agents.tools.attach("sam", "repet")


@pytest.mark.sqlite_only("greps the store file's bytes")
def test_api_key_never_reaches_the_store(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = b"sk-test-SECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret.decode())

    def store_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in db_path.parent.iterdir() if p.name.startswith(db_path.name))

    with letta_nb.connect(db_path) as c:
        agent = c.agents.create("sam", tools=[word_count])
        c.agents.messages.create(agent, "My name is Ada.")
        c.agents.messages.create(agent, "remember that the vault opens at noon")
        c.agents.messages.create(agent, "What is my name?")
        c.agents.messages.create(agent, '/call word_count {"text": "one two"}')
        c.agents.passages.create(agent, "A passage about keys.", tags=["keys"])
        c.agents.blocks.update(agent, "persona", value="I guard secrets.")
        live = store_bytes()
        assert b"vault opens at noon" in live  # the grep does see what was stored
        assert secret not in live
    closed = store_bytes()
    assert b"Name: Ada" in closed
    assert secret not in closed


def test_one_version_source_and_a_typed_package() -> None:
    """The distribution's version is letta_nb.__version__ (pyproject reads it); py.typed ships (PEP 561)."""
    import importlib.metadata
    from pathlib import Path

    assert importlib.metadata.version("letta-nb") == letta_nb.__version__
    assert (Path(letta_nb.__file__).parent / "py.typed").is_file()
    assert "Apache License" in (Path(letta_nb.__file__).parent.parent / "LICENSE").read_text()


# ---- letta_client's call shapes (issue 13): both forms work, a half-written one names the fix -------------


def test_agent_id_keyword_and_label_first_forms_work_beside_the_positional_ones(client):
    agent = client.agents.create(name="shapes", model="offline")
    assert client.agents.retrieve(agent_id=agent.id).name == "shapes"
    client.agents.messages.create(agent_id=agent.id, messages=[{"role": "user", "content": "My name is Ada."}])
    assert client.agents.blocks.retrieve("human", agent_id=agent.id).value == "Name: Ada"  # letta_client
    assert client.agents.blocks.retrieve(block_label="human", agent_id="shapes").value == "Name: Ada"
    assert client.agents.blocks.retrieve(agent, "human").value == "Name: Ada"  # letta_nb's own
    client.agents.blocks.update("human", agent_id=agent.id, value="Name: Bo")
    client.agents.blocks.update(agent, "persona", value="Terse.")
    assert [b.value for b in client.agents.blocks.list(agent_id=agent.id)] == ["Name: Bo", "Terse."]
    passage = client.agents.passages.create(agent_id=agent.id, text="a note")
    client.agents.passages.delete(passage.id, agent_id=agent.id)
    assert client.agents.passages.list(agent_id=agent.id) == []
    client.agents.tools.detach("conversation_search", agent_id=agent.id)
    assert "conversation_search" not in client.agents.tools.list(agent_id=agent.id)
    client.agents.tools.attach(agent, "conversation_search")
    with pytest.raises(InvalidArgumentError, match=r"blocks.retrieve\(ITEM, agent_id=AGENT\)"):
        client.agents.blocks.retrieve("human")  # no agent
    with pytest.raises(InvalidArgumentError, match="name the agent once"):
        client.agents.blocks.update(agent, "human", agent_id=agent.id, value="x")
    assert client.agents.blocks.retrieve(agent, "human").value == "Name: Bo"  # the refused update changed nothing


def test_agents_update_renames_and_list_filters_and_pages(client):
    a = client.agents.create(name="a1", model="offline", tags=["team", "x"])
    b = client.agents.create(name="b1", model="offline", tags=["team"])
    c = client.agents.create(name="c1", model="offline")
    client.agents.update(agent_id=c.id, name="c2", tags=["x"], max_steps=3, system="Be brief.")
    renamed = client.agents.retrieve("c2")
    assert (renamed.id, renamed.tags, renamed.max_steps, renamed.system) == (c.id, ["x"], 3, "Be brief.")
    with pytest.raises(AlreadyExistsError):
        client.agents.update(c.id, name="a1")
    assert [x.name for x in client.agents.list(tags=["team"])] == ["a1", "b1"]
    assert [x.name for x in client.agents.list(tags=["team", "x"], match_all_tags=True)] == ["a1"]
    assert [x.name for x in client.agents.list(name="b1")] == ["b1"]
    assert [x.id for x in client.agents.list(limit=2)] == [a.id, b.id]
    assert [x.id for x in client.agents.list(after=a.id, limit=1)] == [b.id]
    assert [x.id for x in client.agents.list(order="desc", before=a.id)] == [c.id, b.id]
    with pytest.raises(InvalidArgumentError, match="not the id of any agent"):
        client.agents.list(after="agent-nope")
    with pytest.raises(InvalidArgumentError, match="order must be 'asc' or 'desc'"):
        client.agents.list(order="newest")


def test_messages_several_max_steps_pages_and_reset(client):
    prompts = record_prompts(client)
    agent = client.agents.create(name="pager", model="offline")
    parts = [{"type": "text", "text": "My name is Ada."}]
    r = client.agents.messages.create(agent_id=agent.id, max_steps=1, messages=[
        {"role": "user", "content": "Hello."}, {"role": "user", "content": parts}])
    assert r.stop_reason == "max_steps" and len(r.steps) == 1  # the memory edit ran; its reply step did not
    first = client.agents.messages.list(agent.id)[0]
    assert first.role == "user" and first.content == "Hello.\n\nMy name is Ada."  # several messages: one turn
    client.agents.messages.create(agent, "What is my name?")
    every = client.agents.messages.list(agent_id=agent.id)
    assert [m.id for m in client.agents.messages.list(agent.id, order="desc", limit=2)] == [m.id for m in every[:-3:-1]]
    assert [m.id for m in client.agents.messages.list(agent.id, after=every[1].id, before=every[4].id)] == [
        m.id for m in every[2:4]]
    assert client.agents.messages.list(agent.id, limit=2) == every[-2:]  # letta_nb's own: the newest, in order

    reset = client.agents.messages.reset(agent_id=agent.id)
    assert reset.context_start_seq == every[-1].seq + 1
    prompts.prompts.clear()
    client.agents.messages.create(agent, "Hi again.")
    assert "My name is Ada" not in str(prompts.prompts[0][0][1:])  # the conversation left the context ...
    assert client.agents.blocks.retrieve("human", agent_id=agent.id).value == "Name: Ada"  # ... memory stayed
    assert client.agents.messages.list(agent.id)[: len(every)] == every  # ... and recall kept every message


def test_tools_from_source_code_and_delete(client):
    source = 'def shout(text: str) -> str:\n    """Say it loudly.\n\n    Args:\n        text: What to say.\n    """\n' \
             '    return text.upper()\n'
    spec = client.tools.create(source_code=source)
    assert spec.name == "shout" and spec.description == "Say it loudly."
    agent = client.agents.create(name="loud", model="offline", tools=["shout"])
    r = client.agents.messages.create(agent, '/call shout {"text": "hey"}')
    assert any(m.role == "tool" and m.content == "HEY" for m in r.messages)
    assert client.tools.upsert(source_code=source.replace("upper", "lower")).name == "shout"
    assert client.tools.retrieve(tool_id="shout").source is not None
    client.tools.delete("shout")
    assert "shout" not in client.tools.list() and "shout" not in client.agents.tools.list(agent.id)
    with pytest.raises(InvalidArgumentError, match="must define a function"):
        client.tools.create(source_code="x = 1")
    with pytest.raises(InvalidArgumentError, match="base tool"):
        client.tools.delete("send_message")
