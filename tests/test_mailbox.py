"""letta_nb/_mailbox.py: callbacks posted to a loop from other threads run in order, none is lost, and a burst
wakes the loop once (issue 19: each ``call_soon_threadsafe`` is a self-pipe write that hands the GIL over)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from agent_helpers import wait_until

from letta_nb._mailbox import Mailbox, mailbox
from letta_nb.runtime.loop_thread import RuntimeThread


class _CountingLoop(asyncio.SelectorEventLoop):
    """A loop that counts its self-pipe writes: one per ``call_soon_threadsafe``."""

    writes = 0

    def _write_to_self(self) -> None:
        self.writes += 1
        super()._write_to_self()  # type: ignore[misc]


@pytest.fixture
def loop() -> Iterator[_CountingLoop]:
    lp = _CountingLoop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(10)
    lp.close()


def _hold(loop: asyncio.AbstractEventLoop) -> threading.Event:
    """Block ``loop`` in a callback until the returned event is set (it then drains nothing meanwhile)."""
    entered, release = threading.Event(), threading.Event()

    def blocked() -> None:
        entered.set()
        release.wait(10)

    loop.call_soon_threadsafe(blocked)
    entered.wait(10)
    return release


def test_a_burst_wakes_the_loop_once_and_runs_everything_in_order(loop: _CountingLoop) -> None:
    box = mailbox(loop)
    assert mailbox(loop) is box  # one per loop: every poster shares its order
    release = _hold(loop)
    before = loop.writes
    seen: list[int] = []
    for i in range(100):
        box.post(seen.append, i)
    assert loop.writes - before == 1  # was 100 with call_soon_threadsafe
    release.set()
    wait_until(lambda: len(seen) == 100, "the burst to run")
    assert seen == list(range(100))


def test_posts_from_many_threads_all_run_each_threads_in_order(loop: _CountingLoop) -> None:
    box = mailbox(loop)
    seen: list[tuple[int, int]] = []

    def poster(t: int) -> None:
        for i in range(2000):
            box.post(seen.append, (t, i))

    threads = [threading.Thread(target=poster, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wait_until(lambda: len(seen) == 8000, "every post to run")
    for t in range(4):
        assert [i for (u, i) in seen if u == t] == list(range(2000))
    assert loop.writes < 8000


def test_a_post_made_while_the_batch_runs_is_not_dropped(loop: _CountingLoop) -> None:
    box = mailbox(loop)
    seen: list[str] = []

    def first() -> None:  # runs inside a drain; posts from the loop's own thread and from another
        seen.append("first")
        box.post(seen.append, "from the loop")
        other = threading.Thread(target=box.post, args=(seen.append, "from a thread"))
        other.start()
        other.join()

    box.post(first)
    wait_until(lambda: len(seen) == 3, "the posts made in the batch to run")
    assert seen[0] == "first" and sorted(seen[1:]) == ["from a thread", "from the loop"]


def test_a_callback_that_raises_is_reported_and_the_rest_still_run(loop: _CountingLoop) -> None:
    reported: list[dict[str, Any]] = []
    loop.call_soon_threadsafe(loop.set_exception_handler, lambda _lp, ctx: reported.append(ctx))
    box = mailbox(loop)
    release = _hold(loop)
    seen: list[int] = []
    box.post(seen.append, 1)
    box.post(lambda: 1 / 0)
    box.post(seen.append, 2)
    release.set()
    wait_until(lambda: len(seen) == 2 and reported, "the rest to run and the error to be reported")
    assert seen == [1, 2]
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


def test_posting_to_a_closed_loop_raises_and_keeps_nothing() -> None:
    lp = asyncio.new_event_loop()
    lp.close()
    box = Mailbox(lp)
    with pytest.raises(RuntimeError):
        box.post(print, "never")
    assert not box._items and not box._scheduled


def test_a_loop_closed_with_a_drain_pending_still_refuses_posts() -> None:
    lp = asyncio.new_event_loop()
    box = Mailbox(lp)
    box.post(print, "scheduled, never run")  # the loop never runs: its drain stays pending
    lp.close()
    with pytest.raises(RuntimeError):
        box.post(print, "after close")  # not dropped silently behind the pending flag


def test_jobs_ending_together_wake_their_callers_loop_once() -> None:
    """Twenty jobs of the runtime loop end in one pass: their callers' futures are settled with one wakeup of the
    caller's loop (was twenty), and each gets its own value."""
    runtime = RuntimeThread(name="letta_nb-test-mailbox")
    gate: asyncio.Event | None = None
    started = 0

    async def make_gate() -> None:
        nonlocal gate
        gate = asyncio.Event()

    async def wait(i: int) -> int:
        nonlocal started
        started += 1
        assert gate is not None
        await gate.wait()
        return i * i

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, _CountingLoop)
        await runtime.run_async(make_gate())
        callers: list[asyncio.Future[int]] = [loop.create_future() for _ in range(20)]
        jobs = [runtime.submit(wait(i), caller=f) for i, f in enumerate(callers)]
        wait_until(lambda: started == 20, "the jobs to start")
        before = loop.writes
        assert gate is not None
        runtime.loop.call_soon_threadsafe(gate.set)
        # this loop is blocked meanwhile: it drains nothing
        wait_until(lambda: all(j.done() for j in jobs), "the jobs to end")
        values = await asyncio.gather(*callers)
        assert loop.writes - before == 1
        return values

    try:
        with asyncio.Runner(loop_factory=_CountingLoop) as runner:
            assert runner.run(main()) == [i * i for i in range(20)]
    finally:
        runtime.close()
