"""Work in flight when a client closes fails with RuntimeClosedError, not the driver's error.

CI once failed on a widget's memory-refresh thread that read blocks while ``client.close()`` shut the
PostgreSQL pool: asyncpg's "pool is closing" escaped the thread. The rule lives in RuntimeThread."""
from __future__ import annotations

import asyncio
import threading

import pytest

import letta_nb
from letta_nb.errors import RuntimeClosedError
from letta_nb.runtime.loop_thread import RuntimeThread


def test_work_failing_while_the_thread_closes_says_the_runtime_closed() -> None:
    thread = RuntimeThread("test-close")
    started, closing = threading.Event(), asyncio.Event()

    async def in_flight() -> None:
        started.set()
        await closing.wait()
        raise OSError("pool is closing")  # what a driver raises as the store shuts under it

    async def close() -> None:
        closing.set()
        await asyncio.sleep(0)

    errors: list[BaseException] = []

    def call() -> None:
        try:
            thread.run(in_flight())
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    assert started.wait(10)
    thread.run_closing(close())
    caller.join(10)
    thread.close()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeClosedError)
    assert isinstance(errors[0].__cause__, OSError)
    with pytest.raises(RuntimeClosedError):
        thread.run(asyncio.sleep(0))


def test_an_error_of_the_work_itself_is_kept_while_open() -> None:
    thread = RuntimeThread("test-open")

    async def fails() -> None:
        raise OSError("disk full")

    try:
        with pytest.raises(OSError, match="disk full"):
            thread.run(fails())
    finally:
        thread.close()


def test_a_widget_refresh_racing_close_stays_quiet(tmp_path) -> None:
    pytest.importorskip("ipywidgets")
    from letta_nb.notebook.widget import ChatWidget

    client = letta_nb.connect(tmp_path / "store.db")
    agent = client.agents.create(name="closer", model="offline")
    widget = ChatWidget(agent, client)
    client.close()
    widget._refresh_memory()  # must neither raise nor show an error: the client is gone
    assert widget.error == ""
