"""The runtime loop's selector skips the zero-timeout polls of a busy loop (runtime/loop_thread.py), and loses no
I/O for it: a ready file descriptor is reported by the next real poll, a busy loop still sees it, an idle loop
blocks and is woken as before."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from letta_nb.runtime.loop_thread import BUSY_POLL_S, RuntimeThread, _BusyPollSelector


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_a_zero_timeout_poll_within_the_window_is_skipped_and_the_event_comes_with_the_next_real_one(pair):
    reader, writer = pair
    sel = _BusyPollSelector()
    clock = sel.clock = FakeClock()
    try:
        sel.register(reader, 1)  # EVENT_READ
        writer.send(b"x")
        assert [key.fileobj for key, _ in sel.select(0)] == [reader]  # the first busy poll is real
        assert sel.select(0) == []  # the same instant, still busy: skipped, the byte is not read
        clock.now += BUSY_POLL_S / 2
        assert sel.select(0) == []
        clock.now += BUSY_POLL_S  # the window has passed: a real poll again, the byte is still there
        assert [key.fileobj for key, _ in sel.select(0)] == [reader]
        # A loop with nothing to do (a timeout, or none) always polls, even right after a real poll.
        assert [key.fileobj for key, _ in sel.select(0.01)] == [reader]
        assert [key.fileobj for key, _ in sel.select(None)] == [reader]
        assert reader.recv(10) == b"x"
        assert sel.select(0.001) == []  # nothing ready: the real poll finds nothing, as the platform's does
    finally:
        sel.close()


def test_a_busy_runtime_loop_still_sees_a_socket_become_readable(pair):
    """A task that never lets the loop idle (``sleep(0)`` until the data came) would spin forever if the busy
    loop never polled for I/O; it ends once the reader callback has run."""
    reader, writer = pair
    rt = RuntimeThread(name="letta_nb-test-busy")
    try:
        got: list[bytes] = []
        arrived = asyncio.Event()
        spins = 0

        def on_readable() -> None:
            got.append(reader.recv(10))
            arrived.set()

        async def busy() -> int:
            nonlocal spins
            asyncio.get_running_loop().add_reader(reader, on_readable)
            threading.Thread(target=writer.send, args=(b"ping",), daemon=True).start()
            while not arrived.is_set():
                spins += 1
                await asyncio.sleep(0)  # always a ready callback: every pass asks with a zero timeout
            asyncio.get_running_loop().remove_reader(reader)
            return spins

        assert rt.run(busy(), timeout=60) >= 1
        assert got == [b"ping"]
    finally:
        rt.close()


def test_an_idle_runtime_loop_blocks_and_wakes_for_a_thread_safe_call_and_a_timer():
    rt = RuntimeThread(name="letta_nb-test-idle")
    try:
        for _ in range(50):  # each call finds the loop idle (blocked in a real poll) and wakes it
            assert rt.run(asyncio.sleep(0, result=7), timeout=60) == 7
        assert rt.run(asyncio.sleep(0.002, result="timer"), timeout=60) == "timer"
    finally:
        rt.close()
