"""``bench concurrency``: many agents talking at once on one runtime.

Workload: A agents x M messages, each agent's messages sent one after another, all agents at once,
offline model at 50 ms a call (a turn is one call). Ideal wall time = M x 50 ms (agents never wait
for each other). Checks: every message stored once, each agent's messages in the order sent.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time

from letta_nb.bench._backend import BenchBackend
from letta_nb.bench._report import BenchResult

__all__ = ["run"]


def run(quick: bool = False, latency_ms: float = 50.0, backend: BenchBackend | None = None) -> BenchResult:
    if backend is None:
        with BenchBackend() as sqlite:
            return run(quick, latency_ms, sqlite)
    n_agents, n_msgs = (20, 10) if quick else (100, 20)
    with (
        tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp,
        backend.connect(backend.store(tmp, "bench")) as client,
    ):
        agents = [client.agents.create(f"c{i}", model=f"offline?latency_ms={latency_ms:g}").id for i in range(n_agents)]

        async def talk(agent_id: str) -> None:
            for j in range(n_msgs):
                await client.agents.messages.acreate(agent_id, f"message {j} of {agent_id}")

        async def main() -> float:
            gc.collect()  # the set-up's garbage is not the workload's (timeit goes further: GC off)
            t = time.perf_counter()
            await asyncio.gather(*(talk(a) for a in agents))
            return time.perf_counter() - t

        wall = asyncio.run(main())
        lost = violations = 0
        for a in agents:
            sent = [m.content for m in client.agents.messages.list(a) if m.role == "user"]
            expected = [f"message {j} of {a}" for j in range(n_msgs)]
            lost += len(set(expected) - set(sent)) + max(0, len(sent) - len(set(sent)))
            violations += sum(1 for x, y in zip(sent, expected, strict=False) if x != y)  # lost ones: counted above
        writer = client.runtime.store.writer
        commits, writes = writer.commits, writer.writes
    ideal = n_msgs * latency_ms / 1000
    ratio = wall / ideal
    return BenchResult(
        "concurrency",
        {"backend": backend.label, "agents": n_agents, "messages_per_agent": n_msgs, "wall_s": wall, "ideal_s": ideal,
         "ratio": ratio,
         "lost": lost, "order_violations": violations, "steps_per_commit": writes / max(commits, 1)},
        goals={"wall <= 1.3x ideal": ratio <= 1.3, "0 lost": lost == 0, "order kept": violations == 0},
    )
