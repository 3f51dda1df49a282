"""The loopback server in a child process (``python -m letta_nb.testing``), for benchmarks.

In a thread, the server's JSON and vector work shares the GIL with the client being measured; a real
provider runs elsewhere, so the embed benchmark runs the server as a child. Closing stdin stops it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

import httpx

from letta_nb.testing.loopback import Faults, Latency, Limits

__all__ = ["LoopbackProcess", "process_cpu_seconds"]


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far, from Linux /proc; None elsewhere. Benchmarks
    subtract two readings to show how much of the machine a helper process (a stand-in provider, a chunking
    worker) took."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class LoopbackProcess:
    def __init__(self, *, latency: Latency | None = None, limits: Limits | None = None, faults: Faults | None = None,
                 vectors: str = "hash", dim: int = 384):
        self.latency, self.limits, self.faults = latency or Latency(), limits or Limits(), faults or Faults()
        self._config = {"latency": dataclasses.asdict(self.latency), "limits": dataclasses.asdict(self.limits),
                        "faults": dataclasses.asdict(self.faults), "vectors": vectors, "dim": dim}
        self._proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> LoopbackProcess:
        self._proc = subprocess.Popen([sys.executable, "-m", "letta_nb.testing", "--config", json.dumps(self._config)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"the loopback server process did not start (printed {line!r})")
        self.base_url = line
        return self

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (None off Linux, or before it started)."""
        return None if self._proc is None else process_cpu_seconds(self._proc.pid)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.base_url.rsplit("/v1", 1)[0] + "/_loopback/stats", timeout=10).json()
        return stats

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None

    def __exit__(self, *exc: object) -> None:
        self.close()
