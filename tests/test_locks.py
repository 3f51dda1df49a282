"""AgentLocks: FIFO order (also under cancellation), release on errors, independence of agents, a table that drains."""

from __future__ import annotations

import asyncio
import contextvars
import time

import pytest

from letta_nb.errors import LettaNBError
from letta_nb.runtime.locks import TURN_TASK, AgentLocks, LockWait, ReentrantLockError


async def until(condition, *, max_turns: int = 1000) -> None:
    """Yield to the loop until ``condition()`` holds; ordering-based, no wall-clock thresholds."""
    for _ in range(max_turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def queue_workers(locks: AgentLocks, agent: str, n: int, order: list[int]) -> list[asyncio.Task[None]]:
    """Start ``n`` workers one after another so that each is queued on ``agent`` before the next arrives."""

    async def worker(i: int) -> None:
        async with locks.hold(agent):
            order.append(i)
            await asyncio.sleep(0)  # give later arrivals a chance to barge in; they must not

    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(worker(i), name=f"worker-{i}"))
        await until(lambda i=i: locks.waiting(agent) == i + 1)
    return tasks


def test_twenty_waiters_acquire_in_arrival_order():
    locks = AgentLocks()
    order: list[int] = []

    async def main() -> None:
        async with locks.hold("a"):
            tasks = await queue_workers(locks, "a", 20, order)
            assert locks.is_locked("a") and locks.waiting("a") == 20 and len(locks) == 1
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == list(range(20))
    assert len(locks) == 0 and not locks.is_locked("a") and locks.waiting("a") == 0


def test_late_arrival_queues_behind_woken_waiters_and_only_one_task_is_ever_inside():
    locks = AgentLocks()
    order: list[int] = []
    inside = {"now": 0, "max": 0}

    async def worker(i: int) -> None:
        async with locks.hold("a"):
            inside["now"] += 1
            inside["max"] = max(inside["max"], inside["now"])
            order.append(i)
            await asyncio.sleep(0)
            inside["now"] -= 1

    async def main() -> None:
        async with locks.hold("a"):
            tasks = [asyncio.create_task(worker(i)) for i in range(3)]
            await until(lambda: locks.waiting("a") == 3)
        # The lock is released and worker 0 woken but not yet running: the entry must survive (its waiters still
        # count), or a newcomer would get a fresh lock and run alongside worker 0.
        assert len(locks) == 1 and locks.waiting("a") == 3 and not locks.is_locked("a")
        tasks.append(asyncio.create_task(worker(3)))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == [0, 1, 2, 3] and inside["max"] == 1
    assert len(locks) == 0


def test_cancelled_waiter_leaves_the_queue_and_the_others_keep_their_order():
    locks = AgentLocks()
    order: list[int] = []

    async def main() -> None:
        async with locks.hold("a"):
            tasks = await queue_workers(locks, "a", 5, order)
            tasks[2].cancel()
            await until(lambda: locks.waiting("a") == 4)
            assert len(locks) == 1
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)

    asyncio.run(main())
    assert order == [0, 1, 3, 4]
    assert len(locks) == 0


def test_waiter_cancelled_right_after_being_woken_passes_the_lock_on():
    locks = AgentLocks()
    order: list[int] = []

    async def main() -> None:
        holder = locks.hold("a")
        await holder.__aenter__()
        tasks = await queue_workers(locks, "a", 3, order)
        await holder.__aexit__(None, None, None)  # wakes worker 0...
        tasks[0].cancel()  # ...which is cancelled before it can run
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)

    asyncio.run(main())
    assert order == [1, 2]
    assert len(locks) == 0


def test_cancelling_the_only_waiter_keeps_the_entry_until_the_holder_leaves():
    locks = AgentLocks()

    async def main() -> None:
        async with locks.hold("a"):
            waiter = asyncio.create_task(locks.hold("a").__aenter__())
            await until(lambda: locks.waiting("a") == 1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert locks.waiting("a") == 0 and len(locks) == 1 and locks.is_locked("a")
        assert len(locks) == 0

    asyncio.run(main())


def test_exception_inside_the_block_releases_the_lock_for_the_next_waiter():
    locks = AgentLocks()
    order: list[str] = []

    async def failing() -> None:
        async with locks.hold("a"):
            order.append("failing")
            raise ValueError("tool crashed")

    async def next_in_line() -> None:
        async with locks.hold("a"):
            order.append("next")

    async def main() -> None:
        first = asyncio.create_task(failing())
        second = asyncio.create_task(next_in_line())
        with pytest.raises(ValueError, match="tool crashed"):
            await first
        await second
        assert len(locks) == 0 and not locks.is_locked("a")
        async with locks.hold("a"):  # immediately available again
            assert locks.is_locked("a")

    asyncio.run(main())
    assert order == ["failing", "next"]


def test_holder_cancelled_inside_the_block_releases_the_lock():
    locks = AgentLocks()

    async def main() -> None:
        inside = asyncio.Event()

        async def step() -> None:
            async with locks.hold("a"):
                inside.set()
                await asyncio.Event().wait()  # never finishes on its own

        task = asyncio.create_task(step())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(locks) == 0 and not locks.is_locked("a")

    asyncio.run(main())


def test_different_agents_never_block_each_other():
    locks = AgentLocks()

    async def main() -> None:
        release_a = asyncio.Event()
        a_inside = asyncio.Event()
        progress: list[str] = []

        async def hold_a() -> None:
            async with locks.hold("A"):
                a_inside.set()
                await release_a.wait()
                progress.append("A done")

        async def use_b() -> None:
            async with locks.hold("B"):
                assert locks.is_locked("A")
                progress.append("B done")

        a = asyncio.create_task(hold_a())
        await a_inside.wait()
        await use_b()  # completes while A is still held
        assert progress == ["B done"] and locks.is_locked("A") and not locks.is_locked("B")
        assert len(locks) == 1
        release_a.set()
        await a
        assert progress == ["B done", "A done"] and len(locks) == 0

    asyncio.run(main())


def test_table_drains_to_zero_after_ten_thousand_agents():
    locks = AgentLocks(history=100)

    async def step(agent: str) -> None:
        async with locks.hold(agent):
            await asyncio.sleep(0)

    async def main() -> None:
        for i in range(10_000):  # sequentially
            await step(f"seq-{i}")
        assert len(locks) == 0
        tasks = [asyncio.create_task(step(f"con-{i}")) for i in range(10_000)]  # concurrently
        await until(lambda: len(locks) == 10_000)
        await asyncio.gather(*tasks)
        assert len(locks) == 0
        # Contended: three steps per agent, some failing.
        async def maybe_fail(agent: str, fail: bool) -> None:
            async with locks.hold(agent):
                await asyncio.sleep(0)
                if fail:
                    raise RuntimeError("boom")

        jobs = [maybe_fail(f"mix-{i % 1000}", i % 7 == 0) for i in range(3000)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert sum(isinstance(r, RuntimeError) for r in results) == len(range(0, 3000, 7))
        assert len(locks) == 0

    asyncio.run(main())
    assert len(locks.waits) == 100  # history is bounded too


def test_wait_times_are_recorded_for_a_waiter_behind_a_sleeping_holder():
    reported: list[tuple[str, float]] = []
    locks = AgentLocks(on_wait=lambda agent, ms: reported.append((agent, ms)))
    marks: dict[str, float] = {}

    async def main() -> None:
        async def waiter() -> None:
            async with locks.hold("a"):
                pass

        async with locks.hold("a"):
            task = asyncio.create_task(waiter())
            await until(lambda: locks.waiting("a") == 1)
            marks["queued"] = time.perf_counter()  # the waiter started timing before this point
            await asyncio.sleep(0.02)
            marks["released"] = time.perf_counter()  # ...and acquires after this one
        await task

    before = time.time()
    asyncio.run(main())
    assert [w.agent_id for w in locks.waits] == ["a", "a"]
    holder_wait, waiter_wait = locks.waits
    assert isinstance(waiter_wait, LockWait)
    assert waiter_wait.wait_ms > 0
    assert waiter_wait.wait_ms >= (marks["released"] - marks["queued"]) * 1000
    assert waiter_wait.wait_ms > holder_wait.wait_ms  # the uncontended acquire waited less
    assert before <= holder_wait.acquired_at <= waiter_wait.acquired_at <= time.time()
    assert reported == [("a", holder_wait.wait_ms), ("a", waiter_wait.wait_ms)]


def test_failing_on_wait_callback_does_not_break_the_lock():
    def broken(agent: str, ms: float) -> None:
        raise RuntimeError("exporter down")

    locks = AgentLocks(on_wait=broken)

    async def main() -> None:
        async with locks.hold("a"):
            assert locks.is_locked("a")

    asyncio.run(main())
    assert len(locks) == 0 and len(locks.waits) == 1


def test_reentering_the_same_agent_in_one_task_raises_instead_of_deadlocking():
    locks = AgentLocks()

    async def main() -> None:
        async with locks.hold("a"):
            with pytest.raises(ReentrantLockError, match="not reentrant") as info:
                async with locks.hold("a"):
                    pass  # pragma: no cover
            assert isinstance(info.value, LettaNBError)
            assert locks.is_locked("a") and len(locks) == 1
            async with locks.hold("b"):  # other agents are fine
                pass
        assert len(locks) == 0

    asyncio.run(main())


def test_a_slow_resolution_keeps_its_place_ahead_of_later_arrivals():
    """Arrival is the order of hold() calls, even when the first must resolve a name and the next need not."""
    locks = AgentLocks()
    order: list[str] = []

    async def main() -> None:
        lookup = asyncio.get_running_loop().create_future()

        async def slow_resolve(name: str) -> str:
            return await lookup  # a store query that has not answered yet

        async def by_name() -> None:
            async with locks.hold("sam", slow_resolve) as agent_id:
                order.append(f"name->{agent_id}")

        async def by_id(tag: str, agent_id: str) -> None:
            async with locks.hold(agent_id) as held:
                order.append(f"{tag}->{held}")

        tasks = [asyncio.create_task(by_name()), asyncio.create_task(by_id("id", "agent-1")),
                 asyncio.create_task(by_id("other", "agent-2"))]
        for _ in range(20):  # let every task run as far as it can
            await asyncio.sleep(0)
        assert order == [] and not any(t.done() for t in tasks)  # nobody overtook the pending resolution
        lookup.set_result("agent-1")
        await asyncio.gather(*tasks)
        assert len(locks) == 0

    asyncio.run(main())
    assert order == ["name->agent-1", "id->agent-1", "other->agent-2"]


def test_a_refused_resolution_leaves_no_trace_and_lets_the_next_through():
    locks = AgentLocks()

    async def refuse(name: str) -> str:
        raise LookupError(f"no agent {name}")

    async def main() -> None:
        with pytest.raises(LookupError):
            async with locks.hold("ghost", refuse):
                pass  # pragma: no cover
        async with locks.hold("a") as agent_id:
            assert agent_id == "a" and locks.is_locked("a")
        assert len(locks) == 0

    asyncio.run(main())


def test_a_tool_of_the_holding_turn_gets_an_error_and_other_tasks_wait():
    """A task (or thread) that inherited the turn's context while it holds the lock would deadlock: refuse it."""
    locks = AgentLocks()

    async def main() -> None:
        outsider = None
        async with locks.hold("a"):
            TURN_TASK.set(asyncio.current_task())  # what the agent loop does for a turn

            async def tool() -> None:
                async with locks.hold("a"):
                    pass  # pragma: no cover

            with pytest.raises(ReentrantLockError, match="agent turn running this tool"):
                await asyncio.create_task(tool())  # a task of its own, as the executor runs async tools
            with pytest.raises(ReentrantLockError):
                await asyncio.to_thread(lambda: asyncio.run_coroutine_threadsafe(
                    locks.hold("a").__aenter__(), loop).result(5))  # a sync tool submitting to the loop
            outsider = asyncio.create_task(tool(), context=contextvars.Context())  # not the turn's: it waits
            await until(lambda: locks.waiting("a") == 1)
        await outsider
        assert len(locks) == 0

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
