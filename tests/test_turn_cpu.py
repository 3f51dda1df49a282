"""What a turn no longer pays for (issue 19), with the behaviour kept: the prompt carries its token estimate
(the offline model does not rescan the window), a turn's steps renew the lease row once per tenth of its
ttl, the step writer formats times as before, and the offline model's cached reading of a tool list
notices a list that changed. Second pass: the offline summariser is linear and writes what the quadratic one
wrote, the collector's young threshold is raised only while a runtime is open, and the lean cross-thread Job
(runtime/loop_thread.py) still hands back values, errors and cancellations, its cleanup awaited."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import gc
import sqlite3
import threading
import time
from typing import Any

import pytest

import letta_nb
from letta_nb.bench._profile import GCTimer
from letta_nb.llm import _offline_rules, _offline_summary
from letta_nb.llm.offline import _prompt_tokens
from letta_nb.llm.tokens import MESSAGE_OVERHEAD_TOKENS, Prompt, message_tokens
from letta_nb.runtime import gc_policy
from letta_nb.runtime.loop_thread import RuntimeThread
from letta_nb.store.ids import DT_FORMAT
from letta_nb.store.sqlite.step_writer import _sql_time, insert_rows


def test_the_prompt_carries_the_sessions_token_estimate_and_the_model_reports_it(tmp_path: Any) -> None:
    with letta_nb.connect(str(tmp_path / "s.db")) as client:
        agent = client.agents.create("p", model="offline")
        for i in range(3):
            client.agents.messages.create(agent.id, f"message number {i}")
        rt = client.runtime
        session = client._thread.run(rt.session(agent.id))
        pending = [session.messages[-3]]  # any committed user message stands in for a new one
        prompt = session.prompt(pending)
        assert isinstance(prompt, Prompt) and isinstance(prompt, list)
        assert prompt.tokens == session.prompt_tokens(pending)  # the same running totals, no second count
        assert list(prompt) == [session.system_message()[0], *(m.openai for m in session.messages), pending[0].openai]
        expected = session.prompt_tokens() + message_tokens({"role": "user", "content": "one more"})
        r = client.agents.messages.create(agent.id, "one more")
        assert r.steps[0].prompt_tokens == expected  # the model reported the runtime's estimate of its prompt
        assert _prompt_tokens(Prompt([{"role": "user", "content": "x" * 400}], 7)) == 7  # read, not rescanned
        plain = [{"role": "user", "content": "x" * 400}]
        assert _prompt_tokens(plain) == 100 + MESSAGE_OVERHEAD_TOKENS  # a plain list is still estimated


def _expires_at(path: str, agent_id: str) -> float:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT expires_at FROM agent_leases WHERE agent_id = ?", (agent_id,)).fetchone()
        return float(row[0])
    finally:
        conn.close()


def test_step_commits_renew_the_lease_row_once_per_tenth_of_the_ttl(tmp_path: Any) -> None:
    path = str(tmp_path / "l.db")
    with letta_nb.connect(path, lease_ttl=60) as client:  # a tenth: 6 s, far more than two turns take
        leases = client.runtime.leases
        agent = client.agents.create("p", model="offline")
        client.agents.messages.create(agent.id, "first")
        lease = leases.held[agent.id]
        first = _expires_at(path, agent.id)
        assert time.time() + 54 < first <= time.time() + 60  # the turn's commit renewed the row to now + ttl
        client.agents.messages.create(agent.id, "second")  # the kept lease, renewed moments ago: no UPDATE
        assert leases.held[agent.id] is lease and _expires_at(path, agent.id) == first
        lease.row_renewed_at -= 6.5  # as if a tenth of the ttl had passed since
        client.agents.messages.create(agent.id, "third")
        assert _expires_at(path, agent.id) > first  # renewed again
        assert len(client.agents.messages.list(agent.id)) == 9  # every turn stored whole
        assert leases.until(None) is not None  # a commit without a lease to track always carries a renewal


def test_step_writer_times_are_the_stores_text_format() -> None:
    for value in (dt.datetime(2026, 12, 1, 20, 41, 56, 123456, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=dt.timezone.utc),  # no microseconds: still 6 digits
                  dt.datetime(2026, 6, 30, 23, 59, 59, 5)):
        assert _sql_time(value) == value.strftime(DT_FORMAT)
    assert _sql_time(None) is None


def test_the_offline_models_reading_of_a_tool_list_notices_a_changed_list() -> None:
    def tool(name: str, heartbeat: bool) -> dict[str, Any]:
        props = {"request_heartbeat": {"type": "boolean"}} if heartbeat else {}
        return {"type": "function", "function": {"name": name, "parameters": {"properties": props}}}

    tools = [tool("a", True)]
    assert _offline_rules._heartbeat_params(tools) == {"a": True}
    assert _offline_rules._heartbeat_params(tools) is _offline_rules._heartbeat_params(tools)  # kept
    tools.append(tool("b", False))  # grown in place: read again
    assert _offline_rules._heartbeat_params(tools) == {"a": True, "b": False}
    assert _offline_rules._heartbeat_params([tool("a", False)]) == {"a": False}  # another list, its own reading


def test_indexed_rows_go_in_multi_row_statements_and_are_all_searchable(tmp_path: Any) -> None:
    path = str(tmp_path / "m.db")
    with letta_nb.connect(path) as client:
        agent = client.agents.create("p", model="offline")
        client.agents.messages.create(agent.id, "hello")
        last = client.agents.messages.list(agent.id)[-1]
        n = 300  # 128 + 128 + 32 + 8 + 4: five statements of cached sizes
        rows = [dataclasses.replace(last, id=f"message-x{i}", seq=last.seq + 1 + i, content=f"zebra number {i}")
                for i in range(n)]

        async def write() -> None:
            await client.runtime.store.writer.submit(lambda cur: insert_rows(cur, "messages", rows))
            await client.runtime.store.catch_up_fulltext()  # messages are indexed in batches (m0011)

        client._thread.run(write())
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("SELECT seq, content FROM messages WHERE content LIKE 'zebra%' ORDER BY seq").fetchall()
        assert stored == [(last.seq + 1 + i, f"zebra number {i}") for i in range(n)]  # all, each once, in order
        assert conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zebra'").fetchone() == (n,)
    finally:
        conn.close()


def _quadratic_summary(messages: list[dict[str, Any]]) -> str:
    """The summariser as it was before issue 19's second pass (a set of subjects rebuilt per dropped fact)."""
    system, user = messages[0]["content"], messages[1]["content"]
    budget = int(m.group(1)) if (m := _offline_summary._BUDGET.search(system)) else 100
    previous = _offline_summary._PREVIOUS.search(user)
    facts = _offline_summary._facts(previous.group(1)) if previous else []
    evicted = _offline_summary._EVICTED.search(user)
    for line in (evicted.group(1) if evicted else "").splitlines():
        role, sep, said = line.partition(": ")
        if sep and role == "user" and (fact := _offline_summary._statement(said)) is not None and fact not in facts:
            facts.append(fact)
    words = len(_offline_summary.HEADER.split()) + len({s for s, _ in facts}) + sum(len(i.split()) for _, i in facts)
    while facts and words > budget:
        subject, item = facts.pop(0)
        words -= len(item.split()) + (subject not in {s for s, _ in facts})
    groups: dict[str, list[str]] = {}
    for subject, item in facts:
        groups.setdefault(subject, []).append(item)
    return "\n".join([_offline_summary.HEADER, *(f"{s}: {';'.join(i)}" for s, i in groups.items())])


@pytest.mark.parametrize("budget", [5, 40, 120, 100_000])
def test_the_linear_summariser_writes_what_the_quadratic_one_wrote(budget: int) -> None:
    boxes = ["Box", "Shelf", "Drawer"]
    previous = "\n".join([_offline_summary.HEADER, "Box: 1 umbrella;2 kettle", "Crate: 3 lamp"])
    said = [f"user: {boxes[i % 3]} {i} holds item{i} number{i % 7}" for i in range(400)]
    said += ["user: Box 1 umbrella", "assistant: Noted.", "user: What is in Box 5?", "user: Box 9 holds item9 number2"]
    request = [{"role": "system", "content": f"Summarise, under {budget} words."},
               {"role": "user", "content": f"<previous_summary>\n{previous}\n</previous_summary>\n"
                                           "<evicted_messages>\n" + "\n".join(said) + "\n</evicted_messages>"}]
    assert _offline_summary.is_summary_request(request)
    summary = _offline_summary.summarise(request)
    assert summary == _quadratic_summary(request)
    assert summary.startswith(_offline_summary.HEADER)
    if budget == 100_000:  # nothing dropped: every distinct statement once, the previous facts first
        assert "Box: 1 umbrella;2 kettle;holds item0 number0;" in summary  # "0" is no content word
        assert summary.count(";holds item9 number2;") == 1 and "Crate: 3 lamp" in summary
    else:  # over the budget the oldest go first; what is left fits it (5: the header alone is left)
        words = len(_offline_summary.HEADER.split()) + sum(1 + len(i.split()) for line in summary.splitlines()[1:]
                                                           for i in [line.split(": ", 1)[1].replace(";", " ")])
        assert words <= max(budget, len(_offline_summary.HEADER.split())) and "1 umbrella" not in summary


@pytest.fixture
def default_thresholds(monkeypatch: pytest.MonkeyPatch) -> Any:
    """CPython's default thresholds, no runtime counted as open; the test's thresholds are undone after it."""
    saved = gc.get_threshold()
    monkeypatch.setattr(gc_policy, "_open", 0)
    monkeypatch.setattr(gc_policy, "_saved", None)
    monkeypatch.setattr(gc_policy, "_set", None)
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_the_young_gc_threshold_is_raised_while_a_runtime_is_open_and_restored_after(tmp_path: Any,
                                                                                      default_thresholds: Any) -> None:
    with letta_nb.connect(str(tmp_path / "g.db")) as client:
        assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, 10, 10)  # the older generations as they were
        with letta_nb.connect(str(tmp_path / "h.db")) as second:
            second.agents.create("p", model="offline")
        assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, 10, 10)  # one runtime still open
        agent = client.agents.create("p", model="offline")
        assert client.agents.messages.create(agent.id, "hello").text
    assert gc.get_threshold() == (700, 10, 10)  # the last one closed: CPython's own again


def test_the_users_gc_thresholds_win(tmp_path: Any, default_thresholds: Any) -> None:
    gc.set_threshold(50_000, 20, 30)  # higher than ours: left alone, and kept after
    with letta_nb.connect(str(tmp_path / "g.db")):
        assert gc.get_threshold() == (50_000, 20, 30)
    assert gc.get_threshold() == (50_000, 20, 30)
    gc.set_threshold(0)  # automatic collection off: stays off
    with letta_nb.connect(str(tmp_path / "h.db")):
        assert gc.get_threshold()[0] == 0
    gc.set_threshold(700, 10, 10)
    with letta_nb.connect(str(tmp_path / "i.db")):
        gc.set_threshold(2_000, 10, 10)  # changed by the user while the runtime was open: theirs is kept
    assert gc.get_threshold() == (2_000, 10, 10)


def test_a_job_hands_back_values_errors_and_cancellations_to_both_kinds_of_caller() -> None:
    thread = RuntimeThread("letta_nb-test-jobs")
    try:
        async def value(x: int) -> int:
            await asyncio.sleep(0)
            return x * 2

        boom = ValueError("the work's own error")

        async def fail() -> None:
            await asyncio.sleep(0)
            raise boom

        assert thread.run(value(21)) == 42
        with pytest.raises(ValueError) as raised:
            thread.run(fail())
        assert raised.value is boom  # the same exception object, not a copy

        async def from_another_loop() -> tuple[int, BaseException]:
            got = await thread.run_async(value(4))
            try:
                await thread.run_async(fail())
            except ValueError as e:
                return got, e
            raise AssertionError("the error was lost")

        assert asyncio.run(from_another_loop()) == (8, boom)

        started, cleaned = threading.Event(), threading.Event()

        async def long_work() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0.01)  # cleanup that itself awaits: the waiter must wait for it
                cleaned.set()

        job = thread.submit(long_work())
        assert started.wait(10) and not job.done()
        with pytest.raises(TimeoutError):
            job.result(0.01)
        assert job.cancel_and_wait(10) and cleaned.is_set() and job.done()
        with pytest.raises(concurrent.futures.CancelledError):
            job.result()

        async def cancel_the_caller() -> None:
            started.clear()
            cleaned.clear()
            task = asyncio.ensure_future(thread.run_async(long_work()))
            while not started.is_set():
                await asyncio.sleep(0.001)
            task.cancel()  # cancelling the awaiting caller cancels the work on the runtime loop
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_the_caller())
        assert cleaned.wait(10)
    finally:
        thread.close()


def test_the_benches_gc_timer_counts_passes_of_any_thread_and_only_inside_it() -> None:
    gc.collect()
    with GCTimer() as timer:
        assert timer.passes == 0
        gc.collect()
        worker = threading.Thread(target=gc.collect)  # a pass another thread triggers counts too
        worker.start()
        worker.join()
    assert timer.passes == 2 and timer.seconds > 0
    gc.collect()  # after the block: not counted, and the callback is gone
    assert timer.passes == 2 and timer._callback not in gc.callbacks
