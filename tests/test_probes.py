"""letta_nb.probes after known workloads: rows, names, types, counts, hit ratios, pool checkouts, plots.

Workloads go through the public API with the offline model; its ``/call NAME {json}`` lines make it
call exactly the tools a test asks for. Probe DataFrames are checked against what the workload must
have produced, and the OpenTelemetry metrics against the same numbers.
"""

from __future__ import annotations

import asyncio
import io
import time

import pandas as pd
import pytest
import sqlalchemy as sa

import letta_nb
from letta_nb import probes
from letta_nb.embeddings.base import BatchRecord
from letta_nb.errors import InvalidArgumentError, RuntimeClosedError
from letta_nb.testing.loopback import Limits, LoopbackServer

SLEEP_MS = 20


def slow_add(a: int, b: int) -> int:
    """Add two numbers, slowly.

    Args:
        a: first number
        b: second number
    """
    time.sleep(SLEEP_MS / 1000)
    return a + b


def _calls(n: int, name: str = "slow_add") -> str:
    return "\n".join(f'/call {name} {{"a": {i}, "b": 1}}' for i in range(n))


def _metric(df: pd.DataFrame, name: str, **attrs: str) -> pd.DataFrame:
    rows = df[df.metric == name]
    for k, v in attrs.items():
        rows = rows[rows.attributes.str.contains(f"{k}={v}", regex=False)]
    return rows


@pytest.fixture
def agent(client):
    return client.agents.create("probe-agent", tools=[slow_add])


def test_three_tool_calls_give_three_rows_with_names_and_durations(client, agent):
    probes.reset(client)
    client.agents.messages.create(agent.id, _calls(3))

    tools = probes.tools(client)
    adds = tools[tools.tool == "slow_add"]
    assert len(adds) == 3
    assert set(adds.status) == {"success"}
    assert set(adds.agent_id) == {agent.id}
    assert (adds.duration_ms >= SLEEP_MS * 0.9).all() and (adds.duration_ms < 10_000).all()
    assert str(tools.started_at.dtype) == "datetime64[ns, UTC]"
    assert adds.error_type.isna().all()

    metrics = probes.metrics(client)
    count = _metric(metrics, "count_tool_execution", tool="slow_add", status="success")
    assert count.value.tolist() == [3.0]
    hist = _metric(metrics, "hist_tool_execution_time_ms", tool="slow_add")
    assert hist["count"].tolist() == [3]
    assert hist["min"].iloc[0] >= SLEEP_MS * 0.9


def test_tool_spans_are_children_of_their_step(client, agent):
    probes.reset(client)
    client.agents.messages.create(agent.id, _calls(3))
    spans = probes.spans(client)
    steps = spans[spans.name == "agent.step"]
    calls = spans[(spans.name == "tool.call") & (spans.tool == "slow_add")]
    assert len(calls) == 3
    parent = steps[steps.span_id == calls.parent_id.iloc[0]]
    assert len(parent) == 1 and set(calls.parent_id) == {parent.span_id.iloc[0]}
    children = spans[spans.parent_id == parent.span_id.iloc[0]]
    assert set(children.name) == {"llm.call", "tool.call", "db.transaction"}
    assert (children.trace_id == parent.trace_id.iloc[0]).all()
    # the children sit inside the step (1 ms slack for float rounding of recorded durations)
    slack = pd.Timedelta(milliseconds=1)
    assert (children.start >= parent.start.iloc[0] - slack).all()
    assert (children.end <= parent.end.iloc[0] + slack).all()
    assert parent.duration_ms.iloc[0] >= 3 * SLEEP_MS * 0.9  # slow_add is not parallel-safe: serial


def test_steps_probe_and_user_message_count(client, agent):
    probes.reset(client)
    for text in ("hello there", "what is my name?"):
        client.agents.messages.create(agent.id, text)
    steps = probes.steps(client)
    assert len(steps) >= 2 and set(steps.agent_id) == {agent.id}
    assert (steps.step_index == 0).sum() == 2
    assert (steps.total_ms >= steps.llm_ms).all() and (steps.total_ms >= steps.db_ms).all()
    assert steps.ttft_ms.notna().all()  # the offline model reports its time to first token
    assert (steps.ended_at >= steps.started_at).all()
    metrics = probes.metrics(client)
    assert _metric(metrics, "count_user_message", model="offline").value.tolist() == [2.0]
    assert _metric(metrics, "hist_step_execution_time_ms")["count"].sum() == len(steps)


def test_cache_hit_ratio_from_known_hits_and_misses(client):
    probes.reset(client)
    cache = client.runtime.caches.cache("probe_test", maxsize=4)
    assert cache.get("k") is None and cache.get("k") is None  # 2 misses
    cache.set("k", 1)
    assert [cache.get("k") for _ in range(3)] == [1, 1, 1]  # 3 hits
    cache.invalidate("k")

    row = probes.cache(client).set_index("cache").loc["probe_test"]
    assert (row.hits, row.misses, row.lookups, row.invalidations) == (3, 2, 5, 1)
    assert row.hit_ratio == pytest.approx(0.6)
    metrics = probes.metrics(client)
    assert _metric(metrics, "count_cache_hits", cache="probe_test").value.tolist() == [3.0]
    assert _metric(metrics, "count_cache_misses", cache="probe_test").value.tolist() == [2.0]
    assert _metric(metrics, "count_cache_invalidations", cache="probe_test").value.tolist() == [1.0]
    # counted once: a second read adds nothing
    assert _metric(probes.metrics(client), "count_cache_hits", cache="probe_test").value.tolist() == [3.0]


async def _hold_connections(engine: sa.ext.asyncio.AsyncEngine, at_once: int, rounds: int) -> None:
    for _ in range(rounds):
        conns = [await engine.connect() for _ in range(at_once)]
        for c in conns:
            await c.execute(sa.text("select 1"))
        for c in conns:
            await c.close()


def test_pool_checkouts_counted(client):
    rt = client.runtime
    probes.reset(client)
    client._thread.run(_hold_connections(rt.store.engine, at_once=3, rounds=2))

    pool = probes.pool(client)
    checkouts, checkins = pool[pool.event == "checkout"], pool[pool.event == "checkin"]
    assert len(checkouts) == 6 and len(checkins) == 6
    assert checkouts.checkout_latency_ms.notna().all() and (checkouts.checkout_latency_ms >= 0).all()
    assert checkins.held_ms.notna().all()
    assert pool.checked_out.max() == 3  # three held at once
    assert pool.utilisation.max() == pytest.approx(3 / pool.capacity.iloc[0])
    assert pool.checked_out.iloc[-1] == 0
    assert str(pool.time.dtype) == "datetime64[ns, UTC]"

    metrics = probes.metrics(client)
    assert _metric(metrics, "count_db_pool_connection_events", event="checkout").value.tolist() == [6.0]
    assert _metric(metrics, "hist_db_pool_connection_duration_ms")["count"].tolist() == [6]
    assert _metric(metrics, "hist_db_pool_checkout_latency_ms")["count"].tolist() == [6]
    gauges = metrics[metrics.kind == "gauge"].set_index("metric").value
    assert gauges["gauge_db_pool_connections_checked_out"] == 0
    assert gauges["gauge_db_pool_connections_total"] == gauges["gauge_db_pool_connections_available"] >= 3


def test_locks_probe_shows_queueing_on_one_agent(client):
    agent = client.agents.create("busy", model="offline?latency_ms=30")
    probes.reset(client)

    async def three_at_once() -> None:
        await asyncio.gather(*(client.agents.messages.acreate(agent.id, f"note {i}") for i in range(3)))

    asyncio.run(three_at_once())
    locks = probes.locks(client)
    mine = locks[(locks.agent_id == agent.id) & (locks.scope == "process")].sort_values("acquired_at")
    assert len(mine) == 3
    # the last turn waited for two whole turns, each at least one 30 ms model call
    assert mine.wait_ms.iloc[-1] >= 2 * 30 * 0.9
    assert _metric(probes.metrics(client), "hist_lock_wait_ms")["count"].sum() == 3
    # one kernel: its turns queue here, never for the store's lease (taken once, then kept between turns)
    store = locks[(locks.agent_id == agent.id) & (locks.scope == "store")]
    assert len(store) == 3 and (store.wait_ms == 0).all()
    events = probes.leases(client)
    assert events[events.agent_id == agent.id].event.tolist()[:3] == ["acquired", "reused", "reused"]
    assert list(events.columns) == ["at", "backend", "agent_id", "event", "wait_ms", "token", "holder_pid",
                                    "holder_host"]


def test_embedder_probe_reads_batch_records(client):
    probes.reset(client)
    tel = client.runtime.telemetry
    tel.on_embed_batch(BatchRecord(time.time(), 64, 900, 41.5, "ok", 0, 0, 200))
    tel.on_embed_batch(BatchRecord(time.time(), 32, 450, 12.0, "error", 2, 1, 503))
    df = probes.embedder(client)
    assert df[["inputs", "status", "retries", "splits", "http_status"]].values.tolist() == [
        [64, "ok", 0, 0, 200], [32, "error", 2, 1, 503]]
    metrics = probes.metrics(client)
    assert _metric(metrics, "count_embedder_batches", status="ok").value.tolist() == [1.0]
    assert _metric(metrics, "count_embedder_inputs").value.tolist() == [96.0]
    assert _metric(metrics, "count_embedder_retries").value.tolist() == [2.0]
    spans = probes.spans(client)
    assert spans[spans.name == "embed.batch"].span_status.tolist() == ["UNSET", "ERROR"]


def test_embedders_probe_sums_each_embedders_real_requests(client):
    probes.reset(client)
    with LoopbackServer(limits=Limits(max_inputs=4), vectors="digest", dim=16) as srv:
        srv.inject("429", "500")  # the first request is throttled, its resend fails once, then all go through
        spec = f"openai/emb-a?base_url={srv.base_url}&dimensions=16&concurrency=1&max_inputs=4"
        rt = client.runtime
        client._thread.run(rt.embedder(spec).embed([f"text {i}" for i in range(10)]))
        client._thread.run(rt.embedder(spec.replace("emb-a", "emb-b")).embed(["one", "two"]))
    df = probes.embedders(client)
    a, b = df.set_index("embedder").loc[spec], df.set_index("embedder").loc[spec.replace("emb-a", "emb-b")]
    # 3 batches of <= 4, 2 failed tries
    assert (a.requests, a.errors, a.throttled, a.inputs, a.retries) == (5, 2, 1, 10, 1)
    assert (b.requests, b.errors, b.inputs) == (1, 0, 2)
    assert a.p95_ms >= a.p50_ms > 0 and a.busy_s > 0
    per_request = probes.embedder(client)
    assert per_request.groupby("embedder").size().to_dict() == {spec: 5, spec.replace("emb-a", "emb-b"): 1}
    probes.reset(client)
    assert probes.embedders(client).empty and list(probes.embedders(client).columns) == list(df.columns)


def test_reset_forgets_everything_and_frames_keep_their_schema(client, agent):
    client.agents.messages.create(agent.id, _calls(1))
    before = probes.tools(client)
    probes.reset(client)
    for probe in (probes.tools, probes.steps, probes.locks, probes.pool, probes.embedder, probes.spans):
        df = probe(client)
        assert df.empty, probe.__name__
    after = probes.tools(client)
    assert list(after.columns) == list(before.columns) and (after.dtypes == before.dtypes).all()
    assert (probes.cache(client).lookups == 0).all()
    assert probes.metrics(client).query("kind != 'gauge'").empty


def test_probes_find_the_newest_open_client(tmp_path):
    with letta_nb.connect(tmp_path / "a.db") as first:
        first.agents.create("one")
        with letta_nb.connect(tmp_path / "b.db") as second:
            assert probes.runtime() is second.runtime
        assert probes.runtime() is first.runtime
        assert probes.runtime(first) is first.runtime and probes.runtime(first.runtime) is first.runtime
    steps_after_close = probes.steps(first)  # an explicit closed client is still readable
    assert isinstance(steps_after_close, pd.DataFrame)


def test_no_open_client_is_a_clear_error(tmp_path):
    with letta_nb.connect(tmp_path / "a.db"):
        pass
    with pytest.raises(RuntimeClosedError, match=r"letta_nb.connect\(\)"):
        probes.tools()
    with pytest.raises(InvalidArgumentError, match="Client"):
        probes.tools("not a client")
    with pytest.raises(InvalidArgumentError, match="tools, steps"):
        probes.plot_latency("nope")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_plots_return_figures_with_data(client, agent):
    from matplotlib.figure import Figure

    probes.reset(client)
    for _ in range(2):
        client.agents.messages.create(agent.id, _calls(2))
    client._thread.run(_hold_connections(client.runtime.store.engine, at_once=2, rounds=1))

    hist = probes.plot_latency("tools", client)
    assert isinstance(hist, Figure)
    assert sum(len(c) for c in hist.axes[0].containers) > 0  # bars drawn
    assert any("slow_add" in t.get_text() for t in hist.axes[0].get_legend().get_texts())
    pct = probes.plot_percentiles("steps", client, window="50ms")
    assert {line.get_label() for line in pct.axes[0].get_lines()} == {"p50", "p95"}
    pool = probes.pool.plot(client)
    assert max(pool.axes[0].get_lines()[0].get_ydata()) == 2
    cache = probes.cache.plot(client)
    assert len(cache.axes[0].patches) == int((probes.cache(client).lookups > 0).sum())
    for fig in (hist, pct, pool, cache, probes.tools.plot(client), probes.steps.plot(client)):
        assert _png(fig).startswith(b"\x89PNG")


def test_plots_on_empty_probes_say_so(client):
    probes.reset(client)
    fig = probes.plot_latency("embedder", client)
    assert "no duration_ms recorded yet" in [t.get_text() for t in fig.axes[0].texts]
    assert _png(fig).startswith(b"\x89PNG")
