"""Running one sandboxed call: start the child, wait for it to end, kill everything it left, read its reply.

The child's stdin, stdout and stderr are unlinked temporary files, not pipes, and the parent waits for the
*process* to exit, never for end-of-file: a background child of the tool that inherited stdout or stderr
therefore cannot turn a finished tool into a timeout, nor hang a turn with ``timeout=None``. The runner
exits the moment its reply is written (``_runner.py``); under bwrap that also ends the PID namespace, which
the kernel empties. Then, on every path (reply, crash, timeout, cancellation), the whole process group of
the child is SIGKILLed, which in the fallback takes the tool's non-``setsid`` descendants with it.

Every outcome, including an interpreter crash or ``sandbox="strict"`` refused for lack of isolation, is a
:class:`SandboxOutcome`; only ``asyncio.CancelledError`` propagates.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from letta_nb.runtime.sandbox._bwrap import bwrap_argv, throwaway_uid
from letta_nb.runtime.sandbox._capabilities import SandboxCapabilities, acapabilities
from letta_nb.runtime.sandbox._policy import SCRATCH, SandboxLimits, sandbox_env
from letta_nb.runtime.sandbox._runner import RUNNER

__all__ = ["SandboxOutcome", "run_in_sandbox"]

_STDERR_TAIL = 2000
_SIGNALS = {signal.SIGXCPU: "the CPU-time limit", signal.SIGKILL: "killed", signal.SIGSEGV: "a crash",
            signal.SIGXFSZ: "the file-size limit"} if hasattr(signal, "SIGXCPU") else {}


@dataclass
class SandboxOutcome:
    """What happened in the sandbox. ``value`` is the JSON-decoded return value (its repr if not JSON-able)."""

    ok: bool
    value: Any
    error: str | None
    stdout: str
    duration_ms: float


async def run_in_sandbox(
    source: str,
    name: str,
    arguments: dict[str, Any],
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
    network: bool = False,
    strict: bool = False,
    limits: SandboxLimits | None = None,
) -> SandboxOutcome:
    """Exec ``source`` in a sandbox, call ``name(**arguments)`` and return its outcome.

    The tool is isolated with bwrap where :func:`capabilities` says so, else it runs as a plain separate
    process (``strict=True`` refuses that). ``env`` adds variables to the allow-listed environment (the
    caller hands them over on purpose); ``network=True`` lets an isolated tool use the host's network.
    """
    start = time.perf_counter()

    def outcome(ok: bool, value: Any = None, error: str | None = None, stdout: str = "") -> SandboxOutcome:
        return SandboxOutcome(ok, value, error, stdout, (time.perf_counter() - start) * 1000)

    try:
        payload = json.dumps({"source": source, "name": name, "arguments": arguments}).encode()
    except (TypeError, ValueError) as e:
        return outcome(False, error=f"TypeError: arguments are not JSON-serializable ({e})")
    caps = await acapabilities()
    if strict and not caps.isolated:
        return outcome(False, error=f"SandboxUnavailableError: tool {name!r} has sandbox='strict', which needs "
                                    f"isolation this machine lacks: {caps.missing}")
    limits = limits or SandboxLimits()
    argv, cwd, uid = _command(caps, network=network, limits=limits)
    config = json.dumps({"rlimits": limits.rlimits(processes=caps.isolated) if os.name == "posix" else {},
                         "uid": uid})
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin.write(payload)
        stdin.seek(0)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, sys.executable, "-I", "-c", RUNNER, config, stdin=stdin, stdout=out, stderr=err,
                env=sandbox_env(env, home=cwd or SCRATCH, network=network), cwd=cwd, start_new_session=True)
        except OSError as e:
            _remove(cwd)
            return outcome(False, error=f"SandboxError: could not start the sandbox process: {e}")
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            return outcome(False, error=f"timed out after {timeout:g}s")
        finally:  # every path, cancellation included: nothing the tool started outlives it
            await asyncio.shield(_kill_group(proc))
            _remove(cwd)
        reply = _last_json_line(_read(out))
        if reply is None:
            tail = _read(err)[-_STDERR_TAIL:].strip()
            return outcome(False, error=f"sandbox process {_describe_exit(proc.returncode, caps)} without a result"
                           + (f"; stderr:\n{tail}" if tail else ""))
    if reply.get("ok"):
        return outcome(True, value=reply.get("value"), stdout=reply.get("stdout", ""))
    return outcome(False, error=reply.get("error", "unknown error"), stdout=reply.get("stdout", ""))


def _command(caps: SandboxCapabilities, *, network: bool, limits: SandboxLimits
             ) -> tuple[list[str], str | None, int | None]:
    """``(argv before python, cwd in the parent's terms or None, uid to switch to)``."""
    if caps.isolated and caps.bwrap:
        uid = throwaway_uid()
        return bwrap_argv(caps.bwrap, network=network, limits=limits, as_root=uid is not None), None, uid
    return [], tempfile.mkdtemp(prefix="letta_nb_sandbox_"), None  # fallback: a private temp dir as scratch


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (it leads its own session) and reap the child."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.returncode is None:  # pragma: no cover - Windows has no process groups of this kind
            proc.kill()
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass
    await proc.wait()


def _remove(path: str | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def _describe_exit(code: int | None, caps: SandboxCapabilities) -> str:
    # bwrap reports a child killed by signal N as exit code 128 + N; a plain process as -N.
    number = -code if code is not None and code < 0 else (code - 128 if caps.isolated and code and code > 128 else 0)
    if number:
        try:
            sig = signal.Signals(number)
        except ValueError:
            return f"exited with code {code}"
        why = _SIGNALS.get(sig)
        return f"was killed by {sig.name}" + (f" ({why})" if why and why != "killed" else "")
    return f"exited with code {code}"


def _last_json_line(out: str) -> dict[str, Any] | None:
    for line in reversed(out.splitlines()):
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply, dict):
            return reply
    return None
