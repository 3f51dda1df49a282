"""``bench multikernel``: many processes on one store against one process doing the same work.

Workload: P processes x M agents x K messages on one SQLite file, every process driving every agent at once
(a thread per agent), offline model at 5 ms a call, each message unique (``p{proc}-{agent}-m{k}``). The
baseline, in the same run, is one process doing the same total work: the same agents, the same P x K
messages per agent from P x M threads, so only the process boundary differs (in-process locks against
cross-process leases). Rounds alternate which side runs first; the ratio is the median of the rounds'
wall ratios. Wall time runs from "go" to the last child's report: interpreter start and ``connect`` are
outside it. Afterwards the store itself is audited (:func:`audit`): user messages lost or duplicated,
each process's order, contiguous ``seq``, whole steps, ``PRAGMA integrity_check``.

The child driver (``python -m letta_nb.bench.multikernel DB ...``) and the audit are shared with the
multi-process tests (tests/test_multikernel.py), so the benchmark and the tests check the same thing.
A turn whose commit is refused (its lease expired and was taken) recovers inside (it takes the lease again and
re-runs the step: ``lease_recoveries``); one that still ends in ``StaleCommitError`` is retried by the driver,
as a caller would; any other error is a failed turn. The driver can also slow or hang its own model calls
(``--slow``, ``--hang-at``) so a test can hold a lease past its expiry or die holding one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from letta_nb.bench._backend import BenchBackend
from letta_nb.bench._report import BenchResult

__all__ = ["Child", "DelayedModel", "audit", "run", "text_of"]

RETRIES = 50  # stale commits retried per message before the driver counts the turn as failed


def text_of(proc: int, agent: str, k: int) -> str:
    return f"p{proc}-{agent}-m{k}"


# ---- the child: one process driving agents ------------------------------------------------------------


class DelayedModel:
    """Wraps this process's model for a spec: the first ``slow_calls`` calls sleep ``slow_ms`` first, call
    number ``hang_at`` never returns. Each such call is announced (``{"in_model": n}``) before it waits,
    so the parent knows the turn holds its agent's lease."""

    supports_parallel_tool_calls = True

    def __init__(self, inner: Any, emit: Any, *, slow_calls: int = 0, slow_ms: float = 0.0, hang_at: int = 0):
        self.inner, self.emit = inner, emit
        self.name, self.context_window = inner.name, inner.context_window
        self.slow_calls, self.slow_ms, self.hang_at = slow_calls, slow_ms, hang_at
        self.calls = itertools.count(1)

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> AsyncIterator[Any]:
        n = next(self.calls)
        if n == self.hang_at:
            self.emit({"in_model": n, "hang": True})
            await asyncio.Event().wait()
        if n <= self.slow_calls:
            self.emit({"in_model": n})
            await asyncio.sleep(self.slow_ms / 1000)
        async for event in self.inner.stream(messages, tools):
            yield event

    @classmethod
    def install(cls, client: Any, spec: str, emit: Any, **delays: Any) -> DelayedModel:
        """Make ``spec`` resolve to a delayed wrapper in this process only (the store is untouched)."""
        model = cls(client.runtime.llm(spec), emit, **delays)
        client.runtime.model_cache.set(spec, model)
        return model


def _lease_summary(client: Any, names: dict[str, str]) -> dict[str, Any]:
    """This process's lease events (``probes.leases()``), counted."""
    import letta_nb

    df = letta_nb.probes.leases(client)
    by_agent: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (agent_id, event), n in df.groupby(["agent_id", "event"]).size().items():
        by_agent[names.get(agent_id, agent_id)][event] = int(n)
    # a wait's length is on the event that ended it (the grant), so the total is over every event
    waits = df["wait_ms"].fillna(0)
    return {"events": {k: int(v) for k, v in df["event"].value_counts().items()}, "by_agent": dict(by_agent),
            "wait_ms": float(waits.sum()), "max_wait_ms": float(waits.max()) if len(waits) else 0.0}


def _drive(argv: list[str]) -> int:
    import letta_nb

    p = argparse.ArgumentParser(prog="python -m letta_nb.bench.multikernel")
    p.add_argument("db")
    p.add_argument("--procs", default="0", help="comma-separated process numbers this process plays")
    p.add_argument("--agents", required=True, help="comma-separated agent names")
    p.add_argument("--messages", type=int, default=4)
    p.add_argument("--lease-ttl", type=float)
    p.add_argument("--lease-timeout", type=float)
    p.add_argument("--slow", default="", help="N:MS: the first N model calls sleep MS ms first")
    p.add_argument("--hang-at", type=int, default=0)
    p.add_argument("--redis-url", help="coordinate through Redis (a PostgreSQL store)")
    args = p.parse_args(argv)
    out_lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with out_lock:  # one write per line: lines from threads must not interleave
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    leases = {k: v for k, v in (("lease_ttl", args.lease_ttl), ("lease_timeout", args.lease_timeout)) if v is not None}
    client = letta_nb.connect(args.db, redis_url=args.redis_url, **leases)
    agents, procs = args.agents.split(","), [int(x) for x in args.procs.split(",")]
    if args.slow or args.hang_at:  # before any session is loaded: a session keeps the model it was made with
        slow_calls, _, slow_ms = args.slow.partition(":")
        for spec in set(client.query("SELECT model FROM agents")["model"]):
            DelayedModel.install(client, spec, emit, slow_calls=int(slow_calls or 0), slow_ms=float(slow_ms or 0),
                                 hang_at=args.hang_at)
    states = {name: client.agents.retrieve(name) for name in agents}
    stats: dict[str, Any] = {"failed": [], "stale_retries": 0, "turns": 0}
    stats_lock = threading.Lock()

    def talk(proc: int, name: str) -> None:
        for k in range(args.messages):
            text = text_of(proc, name, k)
            for attempt in itertools.count():
                try:
                    client.agents.messages.create(name, text)
                except letta_nb.StaleCommitError:
                    with stats_lock:
                        stats["stale_retries"] += 1
                    if attempt < RETRIES:
                        continue
                    with stats_lock:
                        stats["failed"].append(f"{text}: still stale after {RETRIES} retries")
                except Exception as exc:  # a failed turn is the finding: report it, keep driving the rest
                    with stats_lock:
                        stats["failed"].append(f"{text}: {type(exc).__name__}: {exc}"[:500])
                else:
                    with stats_lock:
                        stats["turns"] += 1
                    emit({"sent": text})
                break

    emit({"ready": os.getpid()})
    if sys.stdin.readline().strip() != "go":
        return 1
    start = time.perf_counter()
    threads = [threading.Thread(target=talk, args=(proc, name)) for proc in procs for name in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["wall_s"] = time.perf_counter() - start
    stats["leases"] = _lease_summary(client, {s.id: name for name, s in states.items()})
    client.close()
    emit({"done": stats})
    return 0


# ---- the parent: children and their lines ----------------------------------------------------------------


class Child:
    """A child process speaking JSON lines on stdout (stderr to a file, shown when it fails)."""

    def __init__(self, args: list[str], stderr_path: str):
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, bufsize=0)
        self._buf = b""
        self.lines: list[dict[str, Any]] = []

    @classmethod
    def driver(cls, db: str, stderr_path: str, **options: Any) -> Child:
        args = [sys.executable, "-m", "letta_nb.bench.multikernel", db]
        for key, value in options.items():
            if value is not None:
                args += [f"--{key.replace('_', '-')}", str(value)]
        return cls(args, stderr_path)

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    def wait_for(self, key: str, *, hang_guard_s: float = 120) -> dict[str, Any]:
        """The next line carrying ``key`` (lines read on the way are kept in ``.lines``). The deadline only
        catches a hang; a child that exits first raises with its stderr."""
        deadline = time.monotonic() + hang_guard_s
        while True:
            for i, line in enumerate(self.lines):
                if key in line:
                    return self.lines.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"child {self.proc.pid} sent no {key!r} line in {hang_guard_s} s; {self.stderr()}")
            fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self.proc.wait()
                raise RuntimeError(f"child {self.proc.pid} exited ({code}) before a {key!r} line; {self.stderr()}")
            self._buf += chunk
            *complete, self._buf = self._buf.split(b"\n")
            self.lines += [json.loads(c) for c in complete if c.strip()]

    def stderr(self) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return "stderr:\n" + f.read()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()


def audit(db: str, expected: dict[str, dict[int, list[str]]]) -> dict[str, Any]:
    """What the store holds against what was sent. ``expected[agent][proc]`` is that process's messages to
    that agent in send order. Other user messages are ignored (``unexpected`` counts them)."""
    from letta_nb.store.sqlite.driver import connect_raw
    from letta_nb.testing.pgserver import SyncConnection

    # A PostgreSQL store (a URL) keeps its own integrity: only SQLite files get PRAGMA integrity_check.
    conn: Any = SyncConnection(db) if "://" in db else connect_raw(db, vec=False)
    try:
        result: dict[str, Any] = {"lost": 0, "duplicated": 0, "order_violations": 0, "unexpected": 0,
                                  "seq_errors": [], "half_steps": [], "integrity": "ok" if "://" in db else
                                  conn.execute("PRAGMA integrity_check").fetchone()[0]}
        for name, by_proc in expected.items():
            agent_id, last_seq = conn.execute("SELECT id, last_seq FROM agents WHERE name = ?", (name,)).fetchone()
            rows = conn.execute("SELECT seq, role, content, step_id FROM messages WHERE agent_id = ? ORDER BY seq",
                                (agent_id,)).fetchall()
            seqs = [r[0] for r in rows]
            if seqs != list(range(1, len(rows) + 1)) or last_seq != len(rows):
                result["seq_errors"].append(f"{name}: last_seq {last_seq}, {len(rows)} messages, seqs {seqs[:3]}...")
            said = [r[2] for r in rows if r[1] == "user"]
            counts = collections.Counter(said)
            owner = {text: proc for proc, texts in by_proc.items() for text in texts}
            result["unexpected"] += sum(n for text, n in counts.items() if text not in owner)
            for proc, texts in by_proc.items():
                result["lost"] += sum(1 for t in texts if counts[t] == 0)
                result["duplicated"] += sum(counts[t] - 1 for t in texts if counts[t] > 1)
                seen = list(dict.fromkeys(t for t in said if owner.get(t) == proc))
                kept = [t for t in texts if t in seen]
                # strict=False: this check counts what went wrong (lost, duplicated above); it never raises
                result["order_violations"] += sum(1 for a, b in zip(seen, kept, strict=False) if a != b)
            steps = dict(conn.execute("SELECT id, n_messages FROM steps WHERE agent_id = ?", (agent_id,)).fetchall())
            per_step = collections.Counter(r[3] for r in rows)
            bad = sorted({s for s in per_step if per_step[s] != steps.get(s)} | {s for s in steps if s not in per_step})
            result["half_steps"] += [f"{name}: step {s} has {per_step[s]} of {steps.get(s)} messages" for s in bad]
        return result
    finally:
        conn.close()


# ---- the benchmark -----------------------------------------------------------------------------------------


def _make_store(db: str, agents: list[str], latency_ms: float) -> None:
    import letta_nb

    with letta_nb.connect(db) as client:
        for name in agents:
            client.agents.create(name, model=f"offline?latency_ms={latency_ms:g}")


def _one_run(tmp: str, tag: str, layout: list[list[int]], agents: list[str], k: int,
             latency_ms: float, backend: BenchBackend) -> dict[str, Any]:
    """One store, children playing ``layout`` (process numbers per child); wall time, the children's counts
    and the audit."""
    db = backend.store(tmp, tag)
    _make_store(db, agents, latency_ms)
    children = [Child.driver(db, os.path.join(tmp, f"{tag}-{i}.err"), procs=",".join(map(str, procs)),
                             agents=",".join(agents), messages=k, redis_url=backend.redis_url)
                for i, procs in enumerate(layout)]
    try:
        for c in children:
            c.wait_for("ready")
        start = time.perf_counter()
        for c in children:
            c.write("go")
        done = [c.wait_for("done")["done"] for c in children]
        wall = time.perf_counter() - start
    finally:
        for c in children:
            c.close()
    procs = [p for group in layout for p in group]
    report = audit(db, {a: {p: [text_of(p, a, j) for j in range(k)] for p in procs} for a in agents})
    events: collections.Counter[str] = collections.Counter()
    wait_ms = 0.0
    for d in done:
        events.update(d["leases"]["events"])
        wait_ms += d["leases"]["wait_ms"]
    return {"wall": wall, "failed": sum(len(d["failed"]) for d in done),
            "stale_retries": sum(d["stale_retries"] for d in done), "events": events, "wait_ms": wait_ms,
            "max_wait_ms": max((d["leases"]["max_wait_ms"] for d in done), default=0.0),
            "first_failure": next((f for d in done for f in d["failed"]), None), **report}


def run(quick: bool = False, latency_ms: float = 5.0, backend: BenchBackend | None = None) -> BenchResult:
    if backend is None:
        with BenchBackend() as sqlite:
            return run(quick, latency_ms, sqlite)
    n_procs, n_agents, k, rounds = (2, 4, 4, 2) if quick else (4, 8, 8, 5)
    agents = [f"a{i}" for i in range(n_agents)]
    multi: list[dict[str, Any]] = []
    single: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp:
        for r in range(rounds):  # alternate which side goes first, so a steady drift favours neither
            sides = [("multi", [[p] for p in range(n_procs)], multi), ("single", [list(range(n_procs))], single)]
            for tag, layout, runs in sides if r % 2 == 0 else sides[::-1]:
                runs.append(_one_run(tmp, f"{tag}{r}", layout, agents, k, latency_ms, backend))
    ratios = [m["wall"] / s["wall"] for m, s in zip(multi, single, strict=True)]
    both = multi + single
    total = {key: sum(x[key] for x in both) for key in ("lost", "duplicated", "order_violations", "failed")}
    events: collections.Counter[str] = sum((m["events"] for m in multi), collections.Counter())
    numbers = {
        "backend": backend.label, "processes": n_procs, "agents": n_agents, "messages_per_agent_per_process": k,
        "rounds": rounds,
        "turns_per_run": n_procs * n_agents * k, "latency_ms": latency_ms,
        "multi_wall_s": statistics.median(m["wall"] for m in multi),
        "single_wall_s": statistics.median(s["wall"] for s in single),
        "wall_ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "round_ratios": [round(x, 3) for x in ratios],
        # the processes' lease counters, from probes.leases() in each child; wait_ms summed over every driver
        "lease_waits": events["waited"], "lease_wait_ms": sum(m["wait_ms"] for m in multi),
        "lease_wait_max_ms": max(m["max_wait_ms"] for m in multi),  # the longest one turn waited
        "leases_taken_expired": events["took_expired"],
        "leases_reused": events["reused"],  # kept from the agent's previous turn: no write
        "refused_stale_commits": events["refused_commit"],
        "lease_recoveries": events["recovered"],  # refused turns that took the lease again and re-ran the step
        # turns whose early model answer was dropped: the kept lease's read, overlapping the call, found a waiter
        "turns_restarted": events["restarted"],
        "stale_retries": sum(x["stale_retries"] for x in both),
        "failed_turns": total["failed"], "lost": total["lost"], "duplicated": total["duplicated"],
        "order_violations": total["order_violations"],
        "seq_errors": sum(len(x["seq_errors"]) for x in both), "half_steps": sum(len(x["half_steps"]) for x in both),
        "integrity_ok": all(x["integrity"] == "ok" for x in both),
    }
    notes = [(f"{rounds} rounds of ({n_procs} processes, 1 process with the same {n_procs * n_agents} drivers), "
              "alternating which runs first; wall_ratio: median of round_ratios (multi / single wall time); "
              f"{os.cpu_count()} cores")]
    first = next((x["first_failure"] for x in both if x["first_failure"]), None)
    if first:
        notes.append(f"first failed turn: {first}")
    return BenchResult(
        "multikernel", numbers,
        goals={"0 lost, 0 duplicated": total["lost"] == total["duplicated"] == 0,
               "0 failed turns": total["failed"] == 0,
               "order, seq, steps, integrity kept": total["order_violations"] == 0 and numbers["seq_errors"] == 0
               and numbers["half_steps"] == 0 and numbers["integrity_ok"]},
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(_drive(sys.argv[1:]))
