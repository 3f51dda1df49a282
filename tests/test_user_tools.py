"""User tools in the agent loop: sync and async, errors and timeouts as tool results, malformed or unknown
calls, parallel-safe tools run concurrently and the rest in order, the sandbox's environment.

Like test_agent_loop.py: a real runtime over a real SQLite file with the offline model, whose
``/call TOOL {json}`` lines call exactly that tool with exactly those arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

import pytest

import letta_nb
from tests.agent_helpers import add, assert_consistent, call, tool_messages

# ---- tools used by the tests (module level so their source can be stored and sandboxed) ------------------

_SHARED: dict[str, Any] = {}


async def shout(text: str) -> str:
    """Upper-case a text, asynchronously.

    Args:
        text: What to shout.
    """
    await asyncio.sleep(0)
    return text.upper() + "!"


def explode(x: int) -> int:
    """Always fails.

    Args:
        x: Ignored.
    """
    raise ValueError(f"cannot handle x={x}")


async def hang_async() -> str:
    """Never returns in time."""
    await asyncio.sleep(60)
    return "too late"


def hang_sync() -> str:
    """Blocks its thread until the test releases it."""
    _SHARED["hang_release"].wait(30)
    return "released"


def meet_a() -> str:
    """Waits at the barrier with meet_b."""
    _SHARED["barrier"].wait()
    return "a met b"


def meet_b() -> str:
    """Waits at the barrier with meet_a."""
    _SHARED["barrier"].wait()
    return "b met a"


def read_env() -> dict:
    """Report what the tool's process can see of the environment."""
    import os

    return {
        "key": os.environ.get("OPENAI_API_KEY"),
        "marker": os.environ.get("LETTA_NB_TEST_MARKER"),
        "pid": os.getpid(),
    }


# ---- user tools ------------------------------------------------------------------------------------------


def test_sync_and_async_user_tools(client: letta_nb.Client) -> None:
    agent = client.agents.create("tools", tools=[add, shout])
    assert {"add", "shout"} <= set(client.agents.tools.list(agent))
    r = client.agents.messages.create(agent, call("add", a=2, b=3))
    [result] = tool_messages(r.messages)
    assert (result.name, result.status, result.content) == ("add", "success", "5")
    assert "The tool add returned: 5" in r.text

    r = client.agents.messages.create(agent, call("shout", text="hi there"))
    [result] = tool_messages(r.messages)
    assert (result.name, result.status, result.content) == ("shout", "success", "HI THERE!")
    assert_consistent(client, agent.id)


def test_a_raising_tool_becomes_an_error_result_and_the_turn_completes(client: letta_nb.Client) -> None:
    agent = client.agents.create("boom", tools=[explode])
    r = client.agents.messages.create(agent, call("explode", x=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error"
    assert result.content == "ValueError: cannot handle x=3"
    assert r.stop_reason == "end_turn" and "failed" in r.text
    records = [t for t in client.runtime.tool_calls if t.name == "explode"]
    assert [(t.status, t.error_type, t.agent_id) for t in records] == [("error", "ValueError", agent.id)]
    assert_consistent(client, agent.id)
    r = client.agents.messages.create(agent, call("send_message", message="next"))
    assert r.text == "next"


def test_a_hanging_tool_times_out_as_an_error_result(client: letta_nb.Client) -> None:
    _SHARED["hang_release"] = threading.Event()
    client.tools.upsert_from_function(hang_async, timeout=0.3)
    client.tools.upsert_from_function(hang_sync, timeout=0.3)
    agent = client.agents.create("hang", tools=["hang_async", "hang_sync"])
    try:
        for name in ("hang_async", "hang_sync"):
            r = client.agents.messages.create(agent, call(name))
            [result] = tool_messages(r.messages)
            assert result.status == "error"
            assert result.content == "TimeoutError: timed out after 0.3s"
            assert r.stop_reason == "end_turn"
    finally:
        _SHARED["hang_release"].set()
    assert_consistent(client, agent.id)


def test_malformed_json_arguments_are_an_error_naming_the_problem(client: letta_nb.Client) -> None:
    agent = client.agents.create("json", tools=[add])
    r = client.agents.messages.create(agent, "/call add {not json")
    [result] = tool_messages(r.messages)
    assert result.status == "error"
    assert result.content.startswith("InvalidArgumentError: arguments of 'add' are not valid JSON")
    assert "Expecting property name enclosed in double quotes" in result.content
    assert r.messages[1].tool_calls[0].arguments == "{not json"  # stored as the model sent it

    r = client.agents.messages.create(agent, call("add", a="two", b=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "'a'" in result.content
    r = client.agents.messages.create(agent, call("add", a=1, c=3))
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "Unexpected argument 'c'" in result.content
    assert_consistent(client, agent.id)


def test_unknown_tool_is_an_error_with_suggestions(client: letta_nb.Client) -> None:
    agent = client.agents.create("unknown", tools=[add])
    r = client.agents.messages.create(agent, "/call nope {}")
    [result] = tool_messages(r.messages)
    assert result.status == "error" and result.content.startswith("ToolNotFoundError: No tool named 'nope'.")
    assert "'add'" in result.content and "'core_memory_append'" in result.content  # lists what exists

    r = client.agents.messages.create(agent, "/call core_memory_apend {}")
    [result] = tool_messages(r.messages)
    assert result.status == "error" and "Did you mean 'core_memory_append'" in result.content
    assert r.stop_reason == "end_turn"
    assert_consistent(client, agent.id)


def test_parallel_safe_tools_run_concurrently(client: letta_nb.Client) -> None:
    _SHARED["barrier"] = threading.Barrier(2, timeout=5)
    client.tools.upsert_from_function(meet_a, parallel_safe=True)
    client.tools.upsert_from_function(meet_b, parallel_safe=True)
    agent = client.agents.create("parallel", tools=["meet_a", "meet_b"])
    r = client.agents.messages.create(agent, "/call meet_a {}\n/call meet_b {}")
    results = tool_messages(r.messages)
    # Each waits for the other at the barrier: run one after the other, both would break it.
    assert [(m.name, m.status, m.content) for m in results] == [("meet_a", "success", "a met b"),
                                                                ("meet_b", "success", "b met a")]
    assert_consistent(client, agent.id)


def test_tools_that_are_not_parallel_safe_run_one_at_a_time(client: letta_nb.Client) -> None:
    _SHARED["barrier"] = threading.Barrier(2, timeout=0.5)
    client.tools.upsert_from_function(meet_a)
    client.tools.upsert_from_function(meet_b)
    agent = client.agents.create("serial", tools=["meet_a", "meet_b"])
    r = client.agents.messages.create(agent, "/call meet_a {}\n/call meet_b {}")
    results = tool_messages(r.messages)
    assert [(m.status, m.content.split(":")[0]) for m in results] == [("error", "BrokenBarrierError")] * 2


def test_sandboxed_tool_does_not_see_api_keys(client: letta_nb.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET")
    monkeypatch.setenv("LETTA_NB_TEST_MARKER", "visible")
    client.tools.upsert_from_function(read_env, sandbox=True, timeout=30)
    agent = client.agents.create("sandboxed", tools=["read_env"])
    r = client.agents.messages.create(agent, "/call read_env {}")
    [result] = tool_messages(r.messages)
    assert result.status == "success", result.content
    seen = json.loads(result.content)
    assert seen["key"] is None
    assert seen["marker"] is None  # the environment is an allow-list (LANG, TZ, ...), not the parent's minus secrets
    assert seen["pid"] != os.getpid()
    assert "sk-test-SECRET" not in json.dumps([m.content for m in client.agents.messages.list(agent)])
