"""``bench serve``: what a message costs through the letta-client SDK over HTTP, next to the in-process API.

One store, two agents on the offline model at zero latency (so the runtime and the wire are measured, not a
model). The in-process side is ``client.agents.messages.create`` in this process; the HTTP side is the
unmodified SDK in a child process (as a Letta user's script would be) against ``client.serve()`` of the same
client, sending the same messages one at a time. The in-process messages are split into a run before and a
run after the HTTP run, so drift (a growing history, a noisy neighbour) weighs on both sides alike. Reported:
messages per second each way, the p50s, and the HTTP overhead per message (p50 HTTP - p50 in-process), split
by ``probes.http()`` (the server's own time per request, auth to last byte) into the server's share (routing,
JSON, the hop between its loop and the runtime loop) and the SDK's (its client stack, sockets, parsing).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from letta_nb import probes
from letta_nb.bench._backend import BenchBackend
from letta_nb.bench._report import BenchResult, percentile

__all__ = ["run"]

_SDK_CHILD = r"""
import json, os, sys, time
from letta_client import Letta

sdk = Letta(base_url=sys.argv[1], api_key=os.environ["LETTA_API_KEY"], max_retries=0)
agent, n = sys.argv[2], int(sys.argv[3])
sdk.agents.messages.create(agent, input="warm up")  # connection, first-call imports: not counted
times = []
for i in range(n):
    t = time.perf_counter()
    r = sdk.agents.messages.create(agent, input=f"message number {i}")
    times.append((time.perf_counter() - t) * 1000)
    assert r.stop_reason.stop_reason == "end_turn", r.stop_reason
print(json.dumps(times))
"""


def _in_process(client: Any, agent: str, n: int, offset: int) -> list[float]:
    times = []
    for i in range(offset, offset + n):
        t = time.perf_counter()
        client.agents.messages.create(agent, f"message number {i}")
        times.append((time.perf_counter() - t) * 1000)
    return times


def _over_http(url: str, token: str, agent: str, n: int) -> list[float]:
    env = {**os.environ, "LETTA_API_KEY": token}  # not argv: ps shows a command line
    proc = subprocess.run([sys.executable, "-c", _SDK_CHILD, url, agent, str(n)], env=env, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the SDK side of bench serve failed:\n{proc.stderr[-2000:]}")
    times: list[float] = json.loads(proc.stdout)
    return times


def run(quick: bool = False, backend: BenchBackend | None = None) -> BenchResult:
    if backend is None:
        with BenchBackend() as sqlite:
            return run(quick, sqlite)
    n = 60 if quick else 400
    with tempfile.TemporaryDirectory(prefix="letta_nb_bench_") as tmp:
        client: Any
        with backend.connect(backend.store(tmp, "serve")) as client:
            local = client.agents.create("bench-serve-local", model="offline").id
            remote = client.agents.create("bench-serve-http", model="offline").id
            client.agents.messages.create(local, "warm up")
            with client.serve() as handle:
                before = _in_process(client, local, n // 2, 0)
                http = _over_http(handle.url, handle.token, remote, n)
                after = _in_process(client, local, n - n // 2, n // 2)
            requests = probes.http(client)
            served = requests[requests.route == "/v1/agents/{agent_id}/messages"].duration_ms.tolist()[1:]
    inproc = before + after
    p50_in, p50_http = statistics.median(inproc), statistics.median(http)
    return BenchResult("serve", {
        "backend": backend.label, "messages": n,
        "inproc_msgs_per_s": 1000 * len(inproc) / sum(inproc), "http_msgs_per_s": 1000 * len(http) / sum(http),
        "inproc_p50_ms": p50_in, "http_p50_ms": p50_http, "http_p99_ms": percentile(http, 99),
        "http_overhead_ms_per_message": p50_http - p50_in, "ratio_http_to_inproc": p50_http / p50_in,
        "server_p50_ms": statistics.median(served),
        "server_overhead_ms_per_message": statistics.median(served) - p50_in,
        "sdk_side_ms_per_message": p50_http - statistics.median(served),
    }, notes=["HTTP: the letta-client SDK in a child process, one JSON request per message (POST "
              "/v1/agents/{id}/messages), against client.serve() of the same client and store"])
