"""What a sandboxed tool may have: its resource limits, its environment, and the files it may see.

These are decisions, not mechanisms (``_bwrap.py`` turns them into a bubblewrap command line, ``_runner.py``
applies the limits inside the child), so they live in one place and read as a list.

- Limits are rlimits set by the child on itself before the tool's code is even read, soft = hard, so the
  tool cannot raise them back. Threads count as processes for ``RLIMIT_NPROC``; a tool needing many BLAS
  threads should set ``OMP_NUM_THREADS`` (passed through) or get a larger ``processes`` limit.
- The environment is built from an allow-list (:data:`PASSED_ENV`), never "the parent's minus a pattern":
  a secret under a name nobody thought of (``MY_SERVICE_PW``, ``DATABASE_URL``) stays out.
- The filesystem view is the Python that runs the tool (its prefixes and site-packages, read-only) and the
  system libraries it links against, nothing of the user's: not the home directory, ``LETTA_NB_HOME``, the
  store or the kernel's working directory. A Python installed *inside* one of those (pyenv under ``~``) is
  bound alone, never its parent directory.
"""

from __future__ import annotations

import contextlib
import os
import site
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from letta_nb.errors import InvalidArgumentError

__all__ = ["SandboxLimits", "PASSED_ENV", "SCRATCH", "sandbox_env", "python_paths", "system_paths",
           "network_paths"]

SCRATCH = "/tmp"
"""Inside the isolated sandbox: the private tmpfs that is the tool's cwd, ``$HOME`` and ``$TMPDIR``."""

PASSED_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC", "LC_TIME", "TZ",
              "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""The only variables of the parent's environment a sandboxed tool sees (when set)."""

_CERT_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # only with network


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call resource limits of a sandboxed tool (each an rlimit, except the scratch size)."""

    memory_bytes: int = 2 << 30
    """Address space (``RLIMIT_AS``): a 4 GB allocation fails with ``MemoryError``."""
    processes: int = 64
    """Processes and threads (``RLIMIT_NPROC``); enforced only where the tool has a uid of its own (isolated)."""
    cpu_seconds: int = 300
    """CPU time per process (``RLIMIT_CPU``); bounds a spinning tool even with ``timeout=None``."""
    file_bytes: int = 256 << 20
    """Largest file the tool may write (``RLIMIT_FSIZE``), including what it prints."""
    scratch_bytes: int = 256 << 20
    """Size of the private scratch tmpfs (isolated only)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgumentError(f"SandboxLimits.{f.name} must be a positive int, got {value!r}.")

    def rlimits(self, *, processes: bool) -> dict[str, tuple[int, int]]:
        """``{"RLIMIT_X": (soft, hard)}`` as the child applies them (``processes=False`` leaves NPROC alone:
        without a uid of its own it would count every process of the user, or nothing for root)."""
        limits = {"RLIMIT_AS": (self.memory_bytes,) * 2, "RLIMIT_FSIZE": (self.file_bytes,) * 2,
                  "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 1)}  # SIGXCPU first, then SIGKILL
        if processes:
            limits["RLIMIT_NPROC"] = (self.processes,) * 2
        return limits


def sandbox_env(extra: Mapping[str, str] | None = None, *, home: str = SCRATCH, network: bool = False
                ) -> dict[str, str]:
    """The tool's whole environment: fixed values, the allow-listed names the parent has, then ``extra``
    (trusted as given: the caller chose to hand those over)."""
    python_bin = os.path.dirname(sys.executable)
    env = {"PATH": os.pathsep.join(dict.fromkeys([python_bin, "/usr/local/bin", "/usr/bin", "/bin"])),
           "HOME": home, "TMPDIR": home, "USER": "sandbox", "LOGNAME": "sandbox", "PYTHONIOENCODING": "utf-8"}
    names = PASSED_ENV + (_CERT_ENV if network else ())
    env.update({k: os.environ[k] for k in names if k in os.environ})
    env.update(extra or {})
    return env


def private_dirs() -> list[Path]:
    """Directories whose content must never be visible: the home directory, ``LETTA_NB_HOME``, the cwd."""
    from letta_nb.settings import current

    dirs = [Path.home(), current().home]
    with contextlib.suppress(OSError):  # the cwd was deleted
        dirs.append(Path.cwd())
    return [d.resolve() for d in dirs]


def python_paths() -> list[str]:
    """The interpreter's prefixes and site-packages, minimal (no path under another), never one that would
    expose a :func:`private_dirs` directory (a prefix that *is* or contains the home directory)."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), *site.getsitepackages()}
    private = private_dirs()
    paths = sorted({str(Path(p).resolve()) for p in candidates if p and os.path.isdir(p)})
    kept: list[str] = []
    for path in paths:
        p = Path(path)
        if any(p == d or p in d.parents for d in private) or p == Path("/"):
            continue
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def system_paths() -> Iterator[tuple[str, str, str]]:
    """``(bwrap option, source, destination)`` triples of the read-only system view."""
    yield "--ro-bind", "/usr", "/usr"
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged-/usr systems: /lib -> usr/lib
            yield "--symlink", os.readlink(top), top
        elif os.path.isdir(top):
            yield "--ro-bind", top, top
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"):
        yield "--ro-bind-try", os.path.realpath(f"/etc/{name}"), f"/etc/{name}"


def network_paths() -> Iterator[str]:
    """What name resolution and TLS need, bound only for tools that asked for the network."""
    for name in ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "host.conf", "services", "protocols",
                 "ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies"):
        yield f"/etc/{name}"
    for var in _CERT_ENV:
        if os.environ.get(var, "").startswith("/"):
            yield os.environ[var]
