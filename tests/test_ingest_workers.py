"""Chunking workers die with the process that started them.

A real child process uploads a slice of the standard library with chunking in worker processes and is
SIGKILLed once its workers exist. Every process it started (the forkserver, the chunk workers, the
resource tracker) must then go away on its own: before the fix the workers blocked forever on a queue
whose write end they held themselves, and kept the forkserver alive with them (~280 MB).

The child's processes are found by a marker in their environment (inherited by the forkserver and every
worker), so a worker the test never saw in the process tree is checked too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import sys
    import letta_nb
    from letta_nb.bench.ingest import stdlib_files

    client = letta_nb.connect(sys.argv[1])
    client.agents.create("reader")
    client.agents.files.upload("reader", stdlib_files(8_000_000), progress=False)
    print("finished", flush=True)
    """
)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # exited while we looked
                continue
            out[int(entry)] = (int(fields[1]), fields[0])
    return out


def _marked(marker: str) -> set[int]:
    """Live (not zombie) processes whose environment carries ``marker``."""
    found = set()
    for pid, (_, state) in _processes().items():
        if state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.add(pid)
        except OSError:
            continue
    return found


def _descendants(root: int) -> dict[int, int]:
    """pid -> depth below ``root`` (1 = child), for its live descendants."""
    procs = _processes()
    depth, frontier = {}, {root: 0}
    while frontier:
        frontier = {pid: frontier[ppid] + 1 for pid, (ppid, state) in procs.items()
                    if ppid in frontier and state != "Z" and pid not in depth}
        depth.update(frontier)
    return depth


def test_chunk_workers_and_forkserver_die_when_the_uploader_is_killed(tmp_path: Path):
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc to find the child's processes")
    marker = f"LETTA_NB_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "LETTA_NB_CHUNK_WORKERS": "2", marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "s.db")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Wait (a hang guard only) until a worker exists: a grandchild, forked by the forkserver.
        deadline = time.monotonic() + 180
        while max(_descendants(proc.pid).values(), default=0) < 2:
            assert proc.poll() is None, f"the uploader exited before its workers started: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no chunk worker appeared"
            time.sleep(0.02)
        started = set(_descendants(proc.pid)) | _marked(marker)
        assert len(started) >= 3, started  # forkserver, >= 1 worker, resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL

        # Everything it started must exit by itself; the bound only keeps a failure from hanging the suite.
        deadline = time.monotonic() + 60
        while (alive := _marked(marker)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"still running after the uploader was killed: {sorted(alive)} of {sorted(started)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _marked(marker):  # only processes this test started carry the marker
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
