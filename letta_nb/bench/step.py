"""``bench step``: per-message runtime overhead of one agent over a long conversation.

Workload: N sequential messages to one agent on the offline model at zero latency, each answered with
one tool call (``send_message``), through the public sync API (thread hop included). Baseline in the
same process: a bare sqlite3 INSERT of the same three message rows plus COMMIT, on a file with the
same pragmas (``--backend postgres``: a bare asyncpg INSERT of the same rows plus COMMIT on the same server,
the fastest a client can commit a step there). Overhead = wall time per message (the model costs ~0.03 ms).
Flatness: the runtime must not re-read history as it grows. ``late_vs_early_ratio`` (10-step windows) and
``late_vs_early_ratio_100`` compare the last steps with the first ones of the timed run, minutes apart, so on a
shared host they measure the neighbours too (0.9-1.6 on the same code within an hour). The goal is judged on
``late_vs_early_paired``: after the timed run, the long agent's turns (1,000+ messages of history) alternate
with a new agent's first ones, in both orders, and the ratio is of their p50s: the same minutes, the same
neighbours, only the history differs.

It explains itself: ``cpu_per_turn_ms`` is the process's CPU time over the timed turns (both threads; on a
loaded host wall time counts the neighbours, CPU time does not), ``gc_collections_per_turn`` the collector's
passes and ``gc_ms_per_turn`` their time (runtime/gc_policy.py raises the young threshold while a runtime is
open), then two extra passes after the timed ones (so they distort nothing): ``alloc_peak_kib_per_turn``
(tracemalloc: what a turn holds at its peak, garbage included) and ``top5``, a cProfile pass on the runtime
thread naming the five letta_nb functions with the most own time (bench/_profile.py). ``p50_hop_ms`` is its floor:
the same sync call's round trip to the runtime loop with an empty coroutine, measured beside the turns. On a
small VM a thread's wakeup on another CPU costs tens of microseconds, twice a call, whatever the turn does.
``hop_and_commit_ratio`` is that hop plus the step's own commit (``p50_db_commit_ms``: its statements on this
store's schema, indexes and fences) over the bare commit: what a turn would cost with no Python work of its own,
the lowest ``ratio_to_baseline`` this design can reach on the host.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from letta_nb.bench._backend import BenchBackend
from letta_nb.bench._profile import GCTimer, gc_collections, peak_alloc_kib, top_costs
from letta_nb.bench._report import BenchResult, percentile

__all__ = ["run"]

PROFILED_TURNS = 200  # turns of each extra pass (allocations, cProfile) after the timed ones
PAIRED_TURNS = 100  # turns of each agent in the paired flatness pass (the quick run: 25)


def _baseline(path: str, n: int) -> float:
    from letta_nb.store.sqlite.driver import connect_raw

    conn = connect_raw(path, vec=False)
    conn.execute("create table m (id text primary key, agent_id text, seq integer, role text, content text, "
                 "created_at text)")
    times = []
    for i in range(n):
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "insert into m values (?,?,?,?,?,?)",
            [(f"m{i}-{j}", "agent", 3 * i + j, "user", f"message {i}", "2026-01-01") for j in range(3)],
        )
        conn.execute("COMMIT")
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return percentile(times, 50)


async def _pg_baseline(dsn: str, n: int) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("create table m (id text primary key, agent_id text, seq integer, role text, "
                           "content text, created_at text)")
        times = []
        for i in range(n):
            t = time.perf_counter()
            async with conn.transaction():
                await conn.executemany("insert into m values ($1,$2,$3,$4,$5,$6)",
                                       [(f"m{i}-{j}", "agent", 3 * i + j, "user", f"message {i}", "2026-01-01")
                                        for j in range(3)])
            times.append((time.perf_counter() - t) * 1000)
        return percentile(times, 50)
    finally:
        await conn.close()


def _hop_ms(client: Any, n: int) -> float:
    """p50 of ``n`` sync calls of an empty coroutine through the client's runtime thread (the turns' path)."""

    async def nothing() -> None:
        return None

    times = []
    for _ in range(n):
        t = time.perf_counter()
        client._thread.run(nothing())
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 50)


def _paired_flatness(client: Any, late_id: str, n: int) -> tuple[float, bool]:
    """p50 of ``n`` turns of the long agent ``late_id`` over p50 of a new agent's first ``n`` turns, the two
    alternated (which goes first swaps every pair: the first of a pair runs on a colder cache); and whether the
    new agent stored all of its turns."""
    early_id = client.agents.create("bench-step-early", model="offline").id
    early: list[float] = []
    late: list[float] = []
    for i in range(n):
        pair = ((early_id, early), (late_id, late))
        for agent_id, times in pair if i % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            client.agents.messages.create(agent_id, f"paired message number {i}")
            times.append((time.perf_counter() - t) * 1000)
    return percentile(late, 50) / percentile(early, 50), len(client.agents.messages.list(early_id)) == 3 * n


def run(quick: bool = False, backend: BenchBackend | None = None) -> BenchResult:
    if backend is None:
        with BenchBackend() as sqlite:
            return run(quick, sqlite)
    n = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp:
        base = backend.store(tmp, "baseline")
        baseline = asyncio.run(_pg_baseline(backend.dsn(base), n)) if backend.name == "postgres" else _baseline(base, n)
        client: Any
        with backend.connect(backend.store(tmp, "bench")) as client:
            agent = client.agents.create("bench-step", model="offline")
            times, db = [], []
            cpu0, gc0 = time.process_time(), gc_collections()
            with GCTimer() as collector:
                for i in range(n):
                    t = time.perf_counter()
                    r = client.agents.messages.create(agent.id, f"message number {i}")
                    times.append((time.perf_counter() - t) * 1000)
                    db.append(r.timings["db_ms"])
                    if len(r.steps) != 1 or r.steps[0].tool_names != ("send_message",):
                        raise RuntimeError(f"step bench expects one send_message per message, got {r.steps}")
            cpu_ms, collections = (time.process_time() - cpu0) * 1000 / n, gc_collections() - gc0
            hop = _hop_ms(client, n)
            stored = len(client.agents.messages.list(agent.id))
            paired, paired_kept = _paired_flatness(client, agent.id, 25 if quick else PAIRED_TURNS)

            def turn(i: int) -> None:
                client.agents.messages.create(agent.id, f"extra message number {i}")

            extra = 50 if quick else PROFILED_TURNS
            alloc_kib = peak_alloc_kib(extra, turn)
            top5 = top_costs(client, extra, turn)
    early = times[10:20]
    late = times[-11:]
    p50, db50 = percentile(times, 50), percentile(db, 50)
    ratio = percentile(late, 50) / percentile(early, 50)
    # The same comparison over 100 steps each side: less noisy than DESIGN's 10-step windows.
    ratio_100 = percentile(times[-100:], 50) / percentile(times[10:110], 50)
    return BenchResult(
        "step",
        {
            "backend": backend.label, "messages": n,
            "p50_overhead_ms": p50,
            "p99_overhead_ms": percentile(times, 99),
            "late_vs_early_ratio": ratio,
            "late_vs_early_ratio_100": ratio_100,
            "late_vs_early_paired": paired,
            "baseline_commit_ms": baseline,
            "ratio_to_baseline": p50 / baseline,
            "p50_db_commit_ms": db50,
            "p50_hop_ms": hop,
            "hop_and_commit_ratio": (hop + db50) / baseline,
            "stored_messages": stored,
            "cpu_per_turn_ms": cpu_ms,
            "cpu_ratio_to_baseline": cpu_ms / baseline,
            "gc_collections_per_turn": collections / n,
            "gc_ms_per_turn": collector.seconds * 1000 / n,
            "alloc_peak_kib_per_turn": alloc_kib,
            "top5": top5,
        },
        goals={"p50 overhead <= 2 ms": p50 <= 2.0, "p50 overhead <= 10x the bare commit": p50 <= 10 * baseline,
               "late/early <= 1.1 (flat; paired with a new agent's turns)": paired <= 1.1,
               "nothing lost": stored == 3 * n and paired_kept},
    )
