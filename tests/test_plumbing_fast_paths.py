"""A turn's own machinery, made cheaper for issue 19, keeps its behaviour: telemetry records a long session's
steps with a deque append each and still counts every one on read; the lock table's context manager (a plain
class now) leaves the table as the generator did, on every exit path; a plain send is no approval answer; a
turn stopped while its commit is in flight waits for it (runtime/uncancellable.py, in place of asyncio.shield)
and keeps the step whole."""

from __future__ import annotations

import asyncio
import time

import pytest

import letta_nb
from letta_nb.errors import TurnCancelledError
from letta_nb.runtime.approvals import answers_from
from letta_nb.runtime.locks import AgentLocks, ReentrantLockError
from letta_nb.runtime.runtime import ToolCallRecord
from letta_nb.runtime.uncancellable import Uncancellable
from letta_nb.schemas import StepStats
from letta_nb.telemetry import Telemetry
from tests.agent_helpers import assert_consistent, call


def _counts(tel: Telemetry) -> dict[str, int]:
    metrics = [m for rm in tel.metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    return {m.name: sum(getattr(dp, "count", 0) or getattr(dp, "value", 0) for dp in m.data.data_points)
            for m in metrics}


def test_a_long_unread_session_feeds_no_opentelemetry_on_the_hot_path_and_a_read_counts_every_step():
    tel = Telemetry()
    turns = 7000  # 21,000 records: past the old bound (20,000), where steps began feeding OpenTelemetry
    for i in range(turns):
        tel.on_tool(ToolCallRecord("a", "send_message", "success", 0.1, time.time(), None))
        tel.on_step("a", "offline", StepStats(f"step-{i}", 0, 1.0, 0.5, 0.2, 2.0, 10, 5, "end_turn",
                                              ("send_message",)), 0.3)
        tel.on_lock_wait("a", 0.01)
    assert tel._providers is None  # nothing built or fed yet: each record was an append
    assert len(tel.steps) == turns
    counts = _counts(tel)
    assert counts["count_user_message"] == turns and counts["count_tool_execution"] == turns
    assert counts["hist_step_execution_time_ms"] == turns and counts["hist_lock_wait_ms"] == turns
    assert len(tel.finished_spans()) == 4 * turns  # step, llm, db + one tool each
    tel.close()


def test_the_bound_on_waiting_records_still_holds():
    tel = Telemetry(max_pending=100)
    for i in range(500):
        tel.on_lock_wait("a", float(i))
    assert len(tel._pending) <= 100
    assert _counts(tel)["hist_lock_wait_ms"] == 500
    tel.close()


async def _hold_and(locks: AgentLocks, agent: str, body) -> None:
    async with locks.hold(agent) as agent_id:
        assert agent_id == agent
        await body()


def test_the_lock_table_is_empty_after_a_normal_exit_a_raise_a_cancel_and_a_refused_reentry():
    async def main() -> None:
        waits: list[tuple[str, float]] = []
        locks = AgentLocks(on_wait=lambda a, ms: waits.append((a, ms)))

        async def nothing() -> None:
            await asyncio.sleep(0)

        await _hold_and(locks, "a", nothing)
        assert len(locks) == 0 and [w.agent_id for w in locks.waits] == ["a"] and waits[0][0] == "a"

        async def boom() -> None:
            raise ValueError("inside")

        with pytest.raises(ValueError, match="inside"):
            await _hold_and(locks, "a", boom)
        assert len(locks) == 0 and not locks.is_locked("a")

        async def reenter() -> None:
            async with locks.hold("a"):
                pass

        with pytest.raises(ReentrantLockError):
            await _hold_and(locks, "a", reenter)
        assert len(locks) == 0

        # FIFO, and a holder cancelled mid-block and a waiter cancelled in the queue both leave cleanly.
        order: list[str] = []
        release = asyncio.Event()

        async def first() -> None:
            order.append("first")
            await release.wait()

        holder = asyncio.ensure_future(_hold_and(locks, "a", first))
        while not locks.is_locked("a"):
            await asyncio.sleep(0)
        queued = [asyncio.ensure_future(_hold_and(locks, "a", _append(order, name))) for name in ("x", "y", "z")]
        while locks.waiting("a") < 3:
            await asyncio.sleep(0)
        queued[1].cancel()  # "y" leaves the queue; "x" and "z" keep their places
        holder.cancel()
        await asyncio.gather(holder, *queued, return_exceptions=True)
        assert order == ["first", "x", "z"]
        assert len(locks) == 0 and locks.waiting("a") == 0
        assert [w.agent_id for w in locks.waits].count("a") == 6  # every grant recorded (first, x, z and 3 above)

    asyncio.run(main())


def _append(order: list[str], name: str):
    async def body() -> None:
        order.append(name)

    return body


def test_a_plain_send_is_not_an_approval_answer():
    assert answers_from(None) is None
    assert answers_from([{"role": "user", "content": "hi"}]) is None
    assert answers_from([{"type": "approval", "tool_call_id": "c1", "approve": True}])[0].tool_call_id == "c1"


def test_an_uncancellable_wait_lets_the_future_finish_then_raises_the_cancel():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[float] = loop.create_future()
        seen: list[object] = []

        async def waiter() -> None:
            try:
                await Uncancellable(fut)
            except asyncio.CancelledError:
                seen.append(fut.done())
                seen.append(await fut)  # the outcome stays readable
                raise

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        task.cancel()
        task.cancel()  # a second stop is refused too
        for _ in range(5):
            await asyncio.sleep(0)
        assert not fut.done() and not task.done()  # still waiting: the cancel did not reach the future
        fut.set_result(1.5)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [True, 1.5] and not fut.cancelled()

        failed: asyncio.Future[float] = loop.create_future()
        failed.set_exception(ValueError("refused"))
        with pytest.raises(ValueError, match="refused"):
            await Uncancellable(failed)  # done already: no suspension, its exception as awaiting it would raise
        ready: asyncio.Future[float] = loop.create_future()
        loop.call_soon(ready.set_result, 2.0)
        assert await Uncancellable(ready) == 2.0

    asyncio.run(main())


def test_a_turn_stopped_while_its_commit_is_in_flight_keeps_the_step_whole(client: letta_nb.Client, monkeypatch):
    agent = client.agents.create("stopped-at-commit")
    rt = client.runtime
    submit = rt.store.submit_step
    stopped: list[str] = []

    def submit_then_stop(write):
        fut = submit(write)
        if not stopped:  # the first step's rows are queued: now the stop comes, before they are durable
            stopped.append(write.agent_id)
            assert rt.cancel_turn(write.agent_id)
        return fut

    monkeypatch.setattr(rt.store, "submit_step", submit_then_stop)
    with pytest.raises(TurnCancelledError) as caught:
        client.agents.messages.create(agent, call("send_message", message="kept"))
    monkeypatch.undo()
    partial = caught.value.response
    assert partial.stop_reason == "cancelled"
    recall = assert_consistent(client, agent.id)
    assert [m.role for m in recall] == ["user", "assistant", "tool"]  # the step landed, whole, and is the turn's
    assert [m.id for m in partial.messages] == [m.id for m in recall]
    r = client.agents.messages.create(agent, call("send_message", message="next"))
    assert r.stop_reason == "end_turn" and r.text == "next"
    assert_consistent(client, agent.id)
