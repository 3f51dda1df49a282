"""The telemetry layer itself: per-runtime providers, the metric registry, OTLP configuration errors,
bounded memory, lazy imports, and the pool monitor's cleanup."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

import letta_nb
from letta_nb import probes
from letta_nb.embeddings.base import BatchRecord
from letta_nb.errors import InvalidArgumentError, OptionalDependencyError
from letta_nb.runtime.runtime import ToolCallRecord
from letta_nb.schemas import StepStats
from letta_nb.telemetry import METRICS, SPAN_NAMES, Telemetry
from letta_nb.telemetry.pool import POOL_EVENTS


def test_providers_belong_to_each_runtime_not_the_global_ones(tmp_path):
    from opentelemetry import metrics, trace

    global_meter, global_tracer = metrics.get_meter_provider(), trace.get_tracer_provider()
    with letta_nb.connect(tmp_path / "a.db") as a, letta_nb.connect(tmp_path / "b.db") as b:
        a.agents.messages.create(a.agents.create("x").id, "hello")
        pa, pb = a.runtime.telemetry.providers, b.runtime.telemetry.providers
        assert pa.meter_provider is not pb.meter_provider and pa.tracer_provider is not pb.tracer_provider
        steps_a = probes.metrics(a).query("metric == 'hist_step_execution_time_ms'")
        assert steps_a["count"].sum() >= 1
        assert probes.metrics(b).query("metric == 'hist_step_execution_time_ms'").empty
    assert metrics.get_meter_provider() is global_meter and trace.get_tracer_provider() is global_tracer


def test_every_registered_metric_is_emitted_by_a_known_workload(client):
    agent = client.agents.create("all-metrics")
    client.agents.messages.create(agent.id, "My name is Ada.")
    client.runtime.agent_cache.clear()  # an invalidation
    client.runtime.telemetry.on_embed_batch(BatchRecord(time.time(), 8, 80, 3.0, "ok", 1, 1, 200))
    cache = client.runtime.caches.cache("tiny", maxsize=1)
    cache.set("a", 1)
    cache.set("b", 2)  # an eviction
    names = set(probes.metrics(client).metric)
    assert set(METRICS) <= names, sorted(set(METRICS) - names)
    assert set(probes.spans(client).name) == set(SPAN_NAMES)


def test_metric_units_and_kinds_match_the_registry(client):
    client.agents.messages.create(client.agents.create("u").id, "hi")
    df = probes.metrics(client)
    for row in df.drop_duplicates("metric").itertuples():
        spec = METRICS[row.metric]
        assert (row.kind, row.unit) == (spec.kind, spec.unit)
    assert df[df.kind == "histogram"]["count"].notna().all() and df[df.kind != "histogram"]["count"].isna().all()


def test_otlp_endpoint_without_exporter_package_is_a_clear_error(tmp_path, monkeypatch):
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the OTLP HTTP exporter is installed here")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    with pytest.raises(OptionalDependencyError, match="pip install opentelemetry-exporter-otlp-proto-http"):
        letta_nb.connect(tmp_path / "s.db")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(InvalidArgumentError, match="http/protobuf"):
        Telemetry()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Telemetry().otlp is None


def _stats(i: int) -> StepStats:
    return StepStats(f"step-{i}", 0, 1.0, 0.5, 0.2, 2.0, 10, 5, "end_turn", ("send_message",))


def test_pending_records_stay_bounded_and_are_all_counted():
    tel = Telemetry(max_pending=50)
    for i in range(1000):
        tel.on_tool(ToolCallRecord("a", "send_message", "success", 0.1, time.time(), None))
        tel.on_step("a", "offline", _stats(i), 0.3)
    assert len(tel._pending) <= 50
    hist = [m for rm in tel.metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    counts = {m.name: sum(getattr(dp, "count", 0) or getattr(dp, "value", 0) for dp in m.data.data_points)
              for m in hist}
    assert counts["count_tool_execution"] == 1000 and counts["hist_step_execution_time_ms"] == 1000
    assert len(tel.finished_spans()) == 3 * 1000 + 1000  # step, llm, db + one tool each
    tel.close()


def test_spans_are_bounded():
    tel = Telemetry(max_spans=100)
    for i in range(200):
        tel.on_step("a", "offline", _stats(i))
    assert len(tel.finished_spans()) == 100
    tel.close()


def test_import_letta_nb_loads_no_pandas_matplotlib_or_otel_sdk():
    code = ("import sys, letta_nb, letta_nb.probes; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'opentelemetry.sdk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_pool_monitor_detaches_on_close(db_path):
    client = letta_nb.connect(db_path)
    engine = client.runtime.store.engine.sync_engine
    monitor = client.runtime.telemetry.pool
    listeners = list(monitor._listeners)
    assert listeners and {name for name, _ in listeners} == set(POOL_EVENTS)
    assert all(sa.event.contains(engine, name, fn) for name, fn in listeners)
    client.close()
    assert not any(sa.event.contains(engine, name, fn) for name, fn in listeners)
    assert "connect" not in engine.pool.__dict__


def test_reconnecting_in_a_loop_keeps_no_telemetry_alive(tmp_path):
    import gc

    from letta_nb.telemetry.recorder import live_telemetry

    for i in range(3):
        with letta_nb.connect(tmp_path / f"{i}.db") as c:
            probes.metrics(c)
    gc.collect()
    assert live_telemetry() == []
