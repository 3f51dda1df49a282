"""``bench step`` and ``bench concurrency`` explain themselves (issue 19): CPU per turn, allocations, the top five
costs, the runtime thread's CPU utilisation, a size option, and every bench's host calibration. Run as a user
would (``python -m letta_nb.bench ... --json``); speed is the benchmark's to report, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from letta_nb.bench._report import BenchResult, cpu_times, steal_share


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "letta_nb.bench", *args], capture_output=True, text=True, timeout=600)


def _check_host(host: dict[str, float]) -> None:
    steal = host.pop("cpu_steal_share", None)  # Linux only
    assert steal is not None or not os.path.exists("/proc/stat")
    assert steal is None or 0.0 <= steal <= 1.0
    assert set(host) == {"python_loop_s", "python_loop_wall_s", "numpy_matmul_s", "numpy_matmul_wall_s"}
    assert all(v > 0 for v in host.values())  # 10^7 additions and 20 matmuls take measurable time anywhere


def test_bench_step_reports_cpu_allocations_and_top_five_costs() -> None:
    proc = _bench("step", "--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout)["step"]
    assert step["stored_messages"] == 3 * step["messages"]  # the extra passes are not counted as the timed run
    assert step["cpu_per_turn_ms"] > 0
    assert step["cpu_ratio_to_baseline"] == pytest.approx(step["cpu_per_turn_ms"] / step["baseline_commit_ms"])
    assert step["gc_collections_per_turn"] >= 0
    assert step["alloc_peak_kib_per_turn"] > 0  # a turn builds messages, rows and events
    assert 0 < step["p50_hop_ms"] < step["p50_overhead_ms"]  # an empty call's round trip: a turn is more
    top5 = step["top5"]
    assert len(top5) == 5
    for row in top5:
        assert set(row) == {"function", "own_ms_per_turn", "cum_ms_per_turn", "calls_per_turn"}
        assert row["function"].startswith("letta_nb/") and ".py:" in row["function"]  # letta_nb code only
        assert row["cum_ms_per_turn"] >= row["own_ms_per_turn"] > 0 and row["calls_per_turn"] > 0
    own = [row["own_ms_per_turn"] for row in top5]
    assert own == sorted(own, reverse=True)  # ranked by own time
    assert "p50 overhead <= 10x the bare commit" in step["goals"]
    _check_host(step["host"])


def test_bench_concurrency_takes_a_size_and_reports_the_runtime_threads_cpu() -> None:
    proc = _bench("concurrency", "--agents", "6", "--messages", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    conc = json.loads(proc.stdout)["concurrency"]
    assert (conc["agents"], conc["messages_per_agent"]) == (6, 3)
    assert conc["lost"] == 0 and conc["order_violations"] == 0
    assert conc["ideal_s"] == pytest.approx(3 * 0.05)
    assert conc["runtime_cpu_s"] > 0
    # CPU time of one thread cannot exceed the wall time it ran in
    assert 0 < conc["runtime_cpu_utilisation"] <= 1.0 + 1e-6
    assert conc["runtime_cpu_utilisation"] == pytest.approx(conc["runtime_cpu_s"] / conc["wall_s"])
    assert conc["runtime_cpu_per_turn_ms"] == pytest.approx(conc["runtime_cpu_s"] * 1000 / 18)
    # the loop's CPU bounds the wall time from below; the budget is what 1.3x ideal leaves each turn
    assert conc["cpu_bound_ratio"] == pytest.approx(conc["runtime_cpu_s"] / conc["ideal_s"])
    assert conc["cpu_bound_ratio"] <= conc["ratio"] * (1 + 1e-6)
    assert conc["cpu_budget_per_turn_ms"] == pytest.approx(1.3 * 3 * 50 / 18)
    # its floor: empty turns of the same shape; each agent sleeps 3 x 50 ms in a row, so never under the ideal
    assert 1.0 <= conc["floor_ratio"] < conc["ratio"] * 2
    assert conc["ratio_over_floor"] == pytest.approx(conc["ratio"] / conc["floor_ratio"])
    # where a turn's time goes: the caller saw at least the model's 50 ms, the model answered no earlier
    assert conc["turn_ms"] >= 50 and conc["model_late_ms"] >= 0 and conc["commit_wait_ms"] > 0
    assert conc["turn_extra_ms"] == pytest.approx(conc["turn_ms"] - 50)
    assert 0 < conc["outside_step_ms"] < conc["turn_ms"]
    # the mean turn explains the wall time: each agent's turns run one after another
    assert conc["wall_s"] >= 3 * conc["turn_ms"] / 1000 * 0.99
    _check_host(conc["host"])


def test_bench_concurrency_rounds_report_the_median_round() -> None:
    proc = _bench("concurrency", "--agents", "3", "--messages", "2", "--rounds", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    conc = json.loads(proc.stdout)["concurrency"]
    ratios = conc["round_ratios"]
    assert conc["rounds"] == 3 and len(ratios) == 3
    if os.path.exists("/proc/stat"):  # each round's stolen CPU share; the reported round's is its own
        assert len(conc["round_steal"]) == 3 and all(0.0 <= x <= 1.0 for x in conc["round_steal"])
        assert round(conc["cpu_steal_share"], 3) in conc["round_steal"]
    assert round(conc["ratio"], 3) == sorted(ratios)[1]  # the median round's own numbers
    assert conc["ratio_min"] <= conc["ratio"] <= conc["ratio_max"]
    assert round(conc["ratio_min"], 3) == min(ratios) and round(conc["ratio_max"], 3) == max(ratios)
    assert conc["wall_s"] == pytest.approx(conc["ratio"] * conc["ideal_s"])
    assert conc["lost"] == 0 and conc["goals"]["0 lost"] and conc["goals"]["order kept"]


def test_every_bench_table_ends_with_the_host_calibration() -> None:
    proc = _bench("concurrency", "--agents", "2", "--messages", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "== bench concurrency =="
    assert lines[-1].startswith("host: 10^7 Python additions ") and "numpy 512x512 matmul x20" in lines[-1]
    assert "runtime_cpu_utilisation" in proc.stdout


def test_a_ranking_prints_a_row_each() -> None:
    result = BenchResult("x", {"n": 1, "top5": [{"function": "letta_nb/a.py:1(f)", "own_ms_per_turn": 0.5}]})
    table = result.table().splitlines()
    assert table[1:4] == ["n     1", "top5", "  letta_nb/a.py:1(f)  0.5"]
    assert result.to_json()["top5"] == [{"function": "letta_nb/a.py:1(f)", "own_ms_per_turn": 0.5}]


@pytest.mark.parametrize(("args", "message"), [
    (("concurrency", "--agents", "0"), "argument --agents: expected a whole number >= 1, got '0'"),
    (("concurrency", "--messages", "many"), "argument --messages: expected a whole number >= 1, got 'many'"),
    (("step", "--agents", "3"), "bench step takes no --agents"),
    (("step", "--rounds", "3"), "bench step takes no --rounds"),
    (("concurrency", "--rounds", "0"), "argument --rounds: expected a whole number >= 1, got '0'"),
])
def test_size_options_refuse_what_they_cannot_mean(args: tuple[str, ...], message: str) -> None:
    proc = _bench(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_the_steal_share_is_the_stolen_part_of_all_cpu_time(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n")
    before = cpu_times(str(stat))
    stat.write_text("cpu  300 0 100 1500 10 0 15 135 7 0\ncpu0 1 2 3\n")
    after = cpu_times(str(stat))
    assert before == [100, 0, 50, 800, 10, 0, 5, 35, 0, 0]
    # user 200, system 50, idle 700, softirq 10, steal 100: 100 of 1060 ticks (guest time is in user already)
    assert steal_share(before, after) == pytest.approx(100 / 1060)
    assert steal_share(before, before) is None  # no time passed
    assert steal_share(None, after) is None and cpu_times(str(tmp_path / "missing")) is None
    stat.write_text("intr 1 2 3\n")
    assert cpu_times(str(stat)) is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the steal share is read from Linux's /proc/stat")
def test_a_bench_result_reports_the_steal_share_during_its_run() -> None:
    start = cpu_times()  # the last result (or the import) was before this: wait for a tick after both
    while cpu_times() == start:
        time.sleep(0.005)
    result = BenchResult("x", {"n": 1})
    assert result.steal is not None and 0.0 <= result.steal <= 1.0
    assert result.table().splitlines()[-1].endswith(f"CPU stolen by the hypervisor during the run {result.steal:.0%}")
    assert result.to_json()["host"]["cpu_steal_share"] == result.steal
