"""A throw-away Redis server for tests and benchmarks, started by the project itself.

Why: the Redis coordination backend (runtime/redis_leases.py) is tested against a real server, and a
machine (CI included) has no Docker. Debian's ``redis-server`` is run directly on 127.0.0.1 at a free port,
with persistence off (``save ""``, no AOF): a test server's data is thrown away with it, and a
:meth:`RedisServer.restart` loses every key, which is exactly the failure the restart test wants.

Readiness is a condition, not a sleep: :meth:`start` returns once the server answers ``PING``.
:class:`RedisServerUnavailable` says why a server could not start (no binary: the apt-get line to install it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "RedisServerUnavailable", "redis_binary"]


class RedisServerUnavailable(RuntimeError):
    """The test server could not start; the message says why and how to fix it."""


def redis_binary() -> str:
    """The path of ``redis-server``."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)
    if found is None:
        raise RedisServerUnavailable("redis-server is not installed: `apt-get install -y redis-server` (Debian's "
                                     "package; .ci/run installs it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")
    return False


class RedisServer:
    """One Redis server on 127.0.0.1 at a free port (the same port across :meth:`restart`)."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lnbredis", dir="/tmp"))
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What ``letta_nb.connect(..., redis_url=...)`` takes."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        args = [redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly",
                "no", "--dir", str(self.dir), "--logfile", str(self.log), "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _pings(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                self.stop(remove=False)
                raise RedisServerUnavailable(f"redis-server on port {self.port} did not start: {log}")
            time.sleep(0.01)  # polling a condition (PING), not waiting on luck
        return self

    def stop(self, *, remove: bool = True) -> None:
        """Kill the server (SIGKILL: no save, as a crash) and wait for it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Crash the server and start it again on the same port, empty (every key lost)."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
