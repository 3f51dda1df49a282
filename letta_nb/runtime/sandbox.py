"""Running one tool call in a separate, killable Python process.

A tool running in the kernel can hang the agent (a thread cannot be killed), read the user's API keys
from the environment, or crash the interpreter. Tools marked ``sandbox=True`` therefore run here: a fresh
``python -I`` (no user site, no PYTHON* variables, no cwd on ``sys.path``) in its own session, fed the
tool's source and arguments as JSON on stdin.

Invariants: the child never sees environment variables whose names look secret (:data:`SECRET_ENV_PATTERN`)
unless the caller passes them explicitly; on timeout or cancellation the whole process group is killed, so
grandchildren the tool spawned die too; and every outcome, including an interpreter crash, comes back as a
:class:`SandboxOutcome`, never as an exception (only ``asyncio.CancelledError`` propagates). The sandbox
isolates the process, not the machine: the tool can still use the filesystem and the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SECRET_ENV_PATTERN", "SandboxOutcome", "sandbox_env", "run_in_sandbox"]

SECRET_ENV_PATTERN = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.I)
"""Environment variable names matching this are withheld from sandboxed tools."""

_STDERR_TAIL = 2000

# The child keeps the real stdout for its single JSON reply and points fd 1 at stderr, so stray output
# (print to sys.__stdout__, C extensions, subprocesses) cannot corrupt the reply. Annotations are compiled
# lazily (as in ``from __future__ import annotations``) so types imported by the tool's original module
# need not exist here.
RUNNER = r"""
import __future__, asyncio, inspect, io, json, os, sys
reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
captured = io.StringIO()
sys.stdout = captured
try:
    request = json.loads(sys.stdin.read())
    namespace = {"__name__": "__letta_nb_tool__"}
    code = compile(request["source"], "<tool %s>" % request["name"], "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)
    value = namespace[request["name"]](**request["arguments"])
    if inspect.isawaitable(value):
        async def _await(awaitable):
            return await awaitable
        value = asyncio.run(_await(value))
    try:
        text = json.dumps({"ok": True, "value": value, "stdout": captured.getvalue()})
    except (TypeError, ValueError):
        text = json.dumps({"ok": True, "value": repr(value), "stdout": captured.getvalue()})
except BaseException as e:
    text = json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e), "stdout": captured.getvalue()})
reply.write(text + "\n")
reply.flush()
"""


@dataclass
class SandboxOutcome:
    """What happened in the sandbox. ``value`` is the JSON-decoded return value (its repr if not JSON-able)."""

    ok: bool
    value: Any
    error: str | None
    stdout: str
    duration_ms: float


def sandbox_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment minus secret-looking names, plus ``extra`` (which is trusted as given)."""
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV_PATTERN.search(k)}
    env.update(extra or {})
    return env


async def run_in_sandbox(
    source: str,
    name: str,
    arguments: dict[str, Any],
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
) -> SandboxOutcome:
    """Exec ``source`` in a child process, call ``name(**arguments)`` and return its outcome.

    ``env`` replaces the child's environment entirely; by default it is :func:`sandbox_env`.
    """
    start = time.perf_counter()

    def outcome(ok: bool, value: Any = None, error: str | None = None, stdout: str = "") -> SandboxOutcome:
        return SandboxOutcome(ok, value, error, stdout, (time.perf_counter() - start) * 1000)

    try:
        payload = json.dumps({"source": source, "name": name, "arguments": arguments}).encode()
    except (TypeError, ValueError) as e:
        return outcome(False, error=f"TypeError: arguments are not JSON-serializable ({e})")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", RUNNER,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(sandbox_env() if env is None else env), start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(payload), timeout)
    except asyncio.TimeoutError:
        await _kill_group(proc)
        return outcome(False, error=f"timed out after {timeout:g}s")
    finally:
        if proc.returncode is None:  # cancelled: do not leave the tool running behind us
            await asyncio.shield(_kill_group(proc))
    reply = _last_json_line(out)
    if reply is None:
        tail = err.decode(errors="replace")[-_STDERR_TAIL:].strip()
        return outcome(False, error=f"sandbox process exited with code {proc.returncode} without a result"
                       + (f"; stderr:\n{tail}" if tail else ""))
    if reply.get("ok"):
        return outcome(True, value=reply.get("value"), stdout=reply.get("stdout", ""))
    return outcome(False, error=reply.get("error", "unknown error"), stdout=reply.get("stdout", ""))


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (it leads its own session) and reap the child."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows has no process groups of this kind
            proc.kill()
    except ProcessLookupError:
        pass
    await proc.wait()


def _last_json_line(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply, dict):
            return reply
    return None
