"""The code the sandbox child runs (``python -I -c RUNNER CONFIG``), kept as one string.

Order matters and is the point of this file: first the child confines itself (rlimits, soft = hard, then,
when the sandbox was started by root, a switch to the throwaway uid it was given, which drops every
capability), and only then reads the tool's source from stdin. The tool's code therefore never runs with
more than the sandbox allows.

The child keeps the real stdout for its single JSON reply and points fd 1 at stderr, so stray output
(``print`` to ``sys.__stdout__``, C extensions, subprocesses) cannot corrupt the reply. After writing the
reply it leaves with ``os._exit``: no atexit handler, no join of the tool's non-daemon threads or
multiprocessing children, so "the tool returned" and "the process ended" are the same moment, which is
what the parent waits for. Imports are the cheapest that do the job (``asyncio`` only for an awaitable
result): this file is on the path of every sandboxed call. Annotations are compiled lazily (as in ``from
__future__ import annotations``) so types imported by the tool's original module need not exist here.
"""

from __future__ import annotations
import __future__

__all__ = ["RUNNER"]

RUNNER = r"""
import os, sys
def _confine(config):
    if config["rlimits"]:
        import resource, signal
        for name, (soft, hard) in config["rlimits"].items():
            which = getattr(resource, name, None)
            if which is None:
                continue
            ceiling = resource.getrlimit(which)[1]
            if ceiling != resource.RLIM_INFINITY:  # never above a stricter limit we were started with
                soft, hard = min(soft, ceiling), min(hard, ceiling)
            try:
                resource.setrlimit(which, (soft, hard))
            except (ValueError, OSError):  # an OS without this limit (macOS and RLIMIT_AS): not ours to fix
                pass
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG, not a kill
    uid = config["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
import json
_confine(json.loads(sys.argv[1]))
del _confine
import io
reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
captured = io.StringIO()
sys.stdout = captured
try:
    request = json.loads(sys.stdin.read())
    namespace = {"__name__": "__letta_nb_tool__"}
    code = compile(request["source"], "<tool %s>" % request["name"], "exec", flags=__FLAGS__, dont_inherit=True)
    exec(code, namespace)
    value = namespace[request["name"]](**request["arguments"])
    if hasattr(value, "__await__"):
        import asyncio
        async def _await(awaitable):
            return await awaitable
        value = asyncio.run(_await(value))
    try:
        text = json.dumps({"ok": True, "value": value, "stdout": captured.getvalue()})
    except (TypeError, ValueError):
        text = json.dumps({"ok": True, "value": repr(value), "stdout": captured.getvalue()})
except BaseException as e:
    text = json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, e), "stdout": captured.getvalue()})
try:
    reply.write(text + "\n")
    reply.flush()
except OSError as e:
    os.write(2, ("letta_nb sandbox: cannot write the reply (%s bytes): %s\n" % (len(text), e)).encode())
try:
    sys.stderr.flush()
finally:
    os._exit(0)
"""
RUNNER = RUNNER.replace("__FLAGS__", str(__future__.annotations.compiler_flag))
