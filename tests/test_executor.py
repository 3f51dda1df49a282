"""The executor returns one result per call, in order, and turns every tool problem into an error result."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from letta_nb.errors import RuntimeClosedError
from letta_nb.llm.base import ToolCall
from letta_nb.runtime.executor import ToolExecutor, ToolResult
from letta_nb.runtime.tool_schema import ToolSpec, tool_from_function

_ids = itertools.count()


def call(name: str, arguments: str | None = None, **kwargs: Any) -> ToolCall:
    text = arguments if arguments is not None else json.dumps(kwargs)
    return ToolCall(id=f"call_{next(_ids)}", name=name, arguments=text)


def tools(*specs: ToolSpec) -> dict[str, ToolSpec]:
    return {spec.name: spec for spec in specs}


def run(make: Callable[[ToolExecutor], Coroutine[Any, Any, Any]], **options: Any) -> Any:
    """Run ``make(executor)`` on a fresh loop with a fresh executor, closing it afterwards."""

    async def main() -> Any:
        async with ToolExecutor(**options) as executor:
            return await make(executor)

    return asyncio.run(main())


def test_results_come_back_in_call_order_with_metadata() -> None:
    def echo(text: str) -> str:
        return text

    async def slow_first(text: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return text

    specs = tools(tool_from_function(echo), tool_from_function(slow_first, parallel_safe=True))
    calls = [call("slow_first", text="a", delay=0.05), call("slow_first", text="b", delay=0.0), call("echo", text="c"),
             call("nope"), call("slow_first", text="e", delay=0.0)]
    before = time.time()
    results = run(lambda ex: ex.execute(calls, specs))
    assert [r.call_id for r in results] == [c.id for c in calls]
    assert [r.content for r in results[:3]] == ["a", "b", "c"]
    assert [r.status for r in results] == ["success", "success", "success", "error", "success"]
    assert all(r.started_at >= before - 1 and r.duration_ms >= 0 for r in results)
    assert results[0].duration_ms >= 50 * 0.9


def test_parallel_safe_tools_run_concurrently_and_serial_tools_in_order() -> None:
    log: list[str] = []
    barrier = threading.Barrier(2, timeout=5)

    def meet(who: str) -> str:
        log.append(f"start {who}")
        barrier.wait()  # raises BrokenBarrierError unless the other call is running at the same time
        log.append(f"end {who}")
        return who

    def step(who: str) -> str:
        log.append(who)
        return who

    specs = tools(tool_from_function(meet, parallel_safe=True), tool_from_function(step))
    calls = [call("step", who="s1"), call("meet", who="p1"), call("meet", who="p2"), call("step", who="s2"),
             call("step", who="s3")]
    results = run(lambda ex: ex.execute(calls, specs))
    assert [r.status for r in results] == ["success"] * 5, [r.content for r in results]
    assert log[0] == "s1" and log[-2:] == ["s2", "s3"]
    assert set(log[1:3]) == {"start p1", "start p2"} and set(log[3:5]) == {"end p1", "end p2"}


def test_serial_tools_never_overlap() -> None:
    active, peak, lock = 0, 0, threading.Lock()

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.01)
        with lock:
            active -= 1
        return n

    specs = tools(tool_from_function(work))
    results = run(lambda ex: ex.execute([call("work", n=i) for i in range(4)], specs))
    assert [r.value for r in results] == [0, 1, 2, 3]
    assert peak == 1


def test_max_parallel_caps_concurrency() -> None:
    active, peak, lock = 0, 0, threading.Lock()
    pairs = threading.Barrier(2, timeout=5)  # proves two run together; the cap proves no third joins them

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        pairs.wait()
        time.sleep(0.02)
        with lock:
            active -= 1
        return n

    specs = tools(tool_from_function(work, parallel_safe=True))
    results = run(lambda ex: ex.execute([call("work", n=i) for i in range(4)], specs), max_parallel=2)
    assert [r.value for r in results] == [0, 1, 2, 3], [r.content for r in results]
    assert peak == 2


def test_raising_tool_becomes_error_result() -> None:
    def fail(x: int) -> int:
        raise ValueError(f"bad x {x}")

    [result] = run(lambda ex: ex.execute([call("fail", x=3)], tools(tool_from_function(fail))))
    assert (result.status, result.content, result.error_type, result.value) == ("error", "ValueError: bad x 3",
                                                                                "ValueError", None)


class _ToolsOwnBaseException(BaseException):
    """A BaseException subclass of a tool's own making."""


def _raisers(exc: BaseException) -> list[tuple[str, Any]]:
    """Every way a tool can raise: in the thread pool, on the loop, from an async generator, from the
    awaitable a sync tool returns."""

    def sync_tool() -> str:
        raise exc

    async def async_tool() -> str:
        raise exc

    async def async_generator_tool() -> str:
        async def words() -> Any:
            yield "one"
            raise exc

        return " ".join([w async for w in words()])

    def returns_awaitable_tool() -> Any:
        async def later() -> str:
            raise exc

        return later()

    async def awaits_a_failed_future_tool() -> str:  # the loop *throws* this one into the awaiting coroutine
        future = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
        return await future

    return [(f.__name__, f) for f in (sync_tool, async_tool, async_generator_tool, returns_awaitable_tool,
                                      awaits_a_failed_future_tool)]


@pytest.mark.parametrize(
    "exc",
    [KeyboardInterrupt("pressed in the tool"), SystemExit(3), GeneratorExit("closed"),
     _ToolsOwnBaseException("custom"), asyncio.CancelledError("the tool's own")],
    ids=["KeyboardInterrupt", "SystemExit", "GeneratorExit", "custom", "CancelledError"],
)
def test_a_tools_base_exceptions_are_its_own_error_results(exc: BaseException) -> None:
    raisers = _raisers(exc)
    specs = tools(*(tool_from_function(f, timeout=10) for _, f in raisers))
    calls = [call(name) for name, _ in raisers]

    async def main() -> tuple[list[ToolResult], list[ToolResult]]:
        async with ToolExecutor() as executor:
            first = await executor.execute(calls, specs)
            return first, await executor.execute(calls[:1], specs)  # the executor (and its pool) still serve

    results, again = asyncio.run(main())
    name = type(exc).__name__
    assert [r.status for r in results + again] == ["error"] * 6
    assert [r.error_type for r in results + again] == [name] * 6, [r.content for r in results]
    assert all(r.content == f"{name}: {exc}" or (r.content.startswith(f"{name}: ") and not str(exc))
               for r in results + again), [r.content for r in results]


def interrupting_tool() -> str:
    """Raises KeyboardInterrupt, as a tool that mishandles Ctrl-C might."""
    raise KeyboardInterrupt("pressed inside the tool")


async def exiting_tool() -> str:
    """Calls sys.exit on the event loop."""
    raise SystemExit("tool asked to exit")


def test_a_tool_raising_keyboard_interrupt_leaves_the_runtime_serving(client: Any) -> None:
    agent = client.agents.create("brave", tools=[interrupting_tool, exiting_tool])
    out: dict[str, Any] = {}

    def send() -> None:  # in a thread: where the runtime loop dies, the call never returns
        out["r"] = client.agents.messages.create(agent, "/call interrupting_tool {}\n/call exiting_tool {}")

    th = threading.Thread(target=send, daemon=True)
    th.start()
    th.join(60)  # a hang guard only
    assert not th.is_alive(), "the call never returned: a tool's KeyboardInterrupt reached the runtime loop"
    contents = {m.name: m.content for m in out["r"].messages if m.role == "tool"}
    assert contents["interrupting_tool"] == "KeyboardInterrupt: pressed inside the tool"
    assert contents["exiting_tool"] == "SystemExit: tool asked to exit"
    assert out["r"].stop_reason == "end_turn"
    # ... and the runtime goes on serving.
    assert client.agents.messages.create(agent, "hello").stop_reason == "end_turn"
    assert [a.name for a in client.agents.list()] == ["brave"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [('{"x": ', "not valid JSON"), ("[1, 2]", "must be a JSON object, got list"),
     ('{"x": "3"}', "Argument 'x' of tool 'double' must be an integer, got a string"),
     ('{"x": true}', "must be an integer, got a boolean"),
     ("{}", "Missing required argument.*'x' \\(an integer\\)"),
     ('{"x": 1, "y": 2}', "Unexpected argument 'y'")],
)
def test_bad_arguments_become_error_results(arguments: str, expected: str) -> None:
    ran: list[int] = []

    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    [result] = run(lambda ex: ex.execute([call("double", arguments)], tools(tool_from_function(double))))
    assert result.status == "error" and result.error_type == "InvalidArgumentError"
    assert re.search(expected, result.content), result.content
    assert ran == []


def test_unknown_tool_suggests_close_matches_and_lists_tools() -> None:
    def search(q: str) -> str:
        return q

    def send_message(message: str) -> None:
        return None

    [result] = run(lambda ex: ex.execute([call("serch", q="x")], tools(tool_from_function(search),
                                                                        tool_from_function(send_message))))
    assert result.error_type == "ToolNotFoundError"
    assert "Did you mean 'search'?" in result.content and "Available tools: search, send_message" in result.content


def test_hanging_sync_and_async_tools_time_out() -> None:
    release = threading.Event()
    cancelled: list[bool] = []

    def hang_sync() -> str:
        release.wait(30)
        return "late"

    async def hang_async() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    def quick() -> str:
        return "ok"

    specs = tools(tool_from_function(hang_sync, timeout=0.2), tool_from_function(hang_async, timeout=0.2),
                  tool_from_function(quick))
    try:
        results = run(lambda ex: ex.execute([call("hang_sync"), call("hang_async"), call("quick")], specs))
    finally:
        release.set()  # let the abandoned thread finish
    assert [r.content for r in results] == ["TimeoutError: timed out after 0.2s"] * 2 + ["ok"]
    assert [r.error_type for r in results] == ["TimeoutError", "TimeoutError", None]
    assert cancelled == [True]


def test_tool_raising_timeout_error_is_not_reported_as_our_timeout() -> None:
    def remote() -> str:
        raise TimeoutError("upstream took too long")

    [result] = run(lambda ex: ex.execute([call("remote")], tools(tool_from_function(remote))))
    assert result.content == "TimeoutError: upstream took too long"


def test_async_tool_and_injected_agent_state() -> None:
    async def whoami(greeting: str, agent_state: Any = None) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"greeting": greeting, "agent": agent_state["name"]}

    specs = tools(tool_from_function(whoami))
    state = {"name": "sam"}
    [result] = run(lambda ex: ex.execute([call("whoami", greeting="hi")], specs, injected={"agent_state": state}))
    assert result.value == {"greeting": "hi", "agent": "sam"}
    assert result.content == '{"greeting": "hi", "agent": "sam"}'


def test_cancellation_propagates_and_produces_no_result() -> None:
    seen: list[ToolResult] = []
    tool_cancelled: list[bool] = []

    async def main() -> None:
        started = asyncio.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                tool_cancelled.append(True)
                raise

        async with ToolExecutor(on_result=seen.append) as executor:
            specs = tools(tool_from_function(forever, timeout=None, parallel_safe=True))
            task = asyncio.create_task(executor.execute([call("forever"), call("forever")], specs))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert seen == [] and tool_cancelled == [True, True]


def test_content_conversion_and_truncation() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    def give(kind: str) -> Any:
        return {"none": None, "text": "x" * 25, "list": [1, "a"], "opaque": Opaque()}[kind]

    spec = dataclasses.replace(tool_from_function(give), return_char_limit=10)
    results = run(lambda ex: ex.execute([call("give", kind=k) for k in ("none", "text", "list", "opaque")],
                                        tools(spec)))
    assert [r.content for r in results] == ["None", "x" * 10 + "\n[truncated 15 chars]", '[1, "a"]', "<Opaque>"]
    assert results[1].value == "x" * 25


def test_on_result_sees_every_result_and_its_errors_are_contained() -> None:
    seen: list[str] = []

    def observer(result: ToolResult) -> None:
        seen.append(result.call_id)
        raise RuntimeError("observer bug")

    def ok() -> str:
        return "fine"

    calls = [call("ok"), call("missing"), call("ok")]
    results = run(lambda ex: ex.execute(calls, tools(tool_from_function(ok))), on_result=observer)
    assert sorted(seen) == sorted(c.id for c in calls)
    assert [r.status for r in results] == ["success", "error", "success"]


def test_spec_known_only_by_source_is_rehydrated() -> None:
    stored = dataclasses.replace(tool_from_function(_add), func=None)
    [result] = run(lambda ex: ex.execute([call("_add", a=2, b=3)], tools(stored)))
    assert result.value == 5


def _add(a: int, b: int) -> int:
    """Add."""
    return a + b


def test_closed_executor_refuses_work() -> None:
    async def main() -> None:
        executor = ToolExecutor()
        await executor.aclose()
        with pytest.raises(RuntimeClosedError):
            await executor.execute([], {})

    asyncio.run(main())
