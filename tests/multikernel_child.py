"""A second kernel for tests/test_multikernel.py: a process that does one thing at a time on command.

``python tests/multikernel_child.py DB [LEASE_TTL [LEASE_TIMEOUT]]`` (``-``: the default) connects to the store,
prints ``{"ready": pid}`` and then reads one JSON command a line from stdin, answering each with one
``{"reply": ...}`` line on stdout (or ``{"reply": null, "error": ...}``):
``send`` (a turn: its text, or the error's class and message), ``block`` (a block's value as this process
sees it), ``search`` (archival search), ``delay`` (wrap this process's model for a spec: announce each call,
hang at call ``hang_at``; see letta_nb.bench.multikernel.DelayedModel). A ``send`` that never returns (a hung
model call) leaves the process for the test to kill.

The tools below are registered by the test (the parent) under one name, first v1 then v2; they live here,
at module level in a file, because a stored tool is rebuilt from its source.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any


def probe_v1() -> str:
    """Say which version of the probe tool ran."""
    return "probe version v1"


def probe_v2() -> str:
    """Say which version of the probe tool ran."""
    return "probe version v2"


def main(argv: list[str]) -> int:
    import os

    import letta_nb
    from letta_nb.bench.multikernel import DelayedModel

    lock = threading.Lock()

    def emit(obj: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    ttl, timeout = (float(x) if x != "-" else None for x in [*argv[1:], "-", "-"][:2])
    leases = {k: v for k, v in (("lease_ttl", ttl), ("lease_timeout", timeout)) if v is not None}
    client = letta_nb.connect(argv[0], **leases)
    emit({"ready": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "send":
                reply: Any = client.agents.messages.create(cmd["agent"], cmd["text"]).text
            elif op == "block":
                reply = client.agents.blocks.retrieve(cmd["agent"], cmd["label"]).value
            elif op == "search":
                reply = [p.text for p in client.agents.passages.search(cmd["agent"], cmd["query"], top_k=cmd["k"])]
            elif op == "delay":
                DelayedModel.install(client, cmd["spec"], emit, slow_calls=cmd.get("announce", 0),
                                     hang_at=cmd.get("hang_at", 0))
                reply = "installed"
            elif op == "exit":
                break
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # the test asserts on the error's class: report it, keep serving
            holder = getattr(exc, "holder", None)  # AgentBusyError: who held the lease
            if holder is not None:
                holder = {k: str(v) if k == "since" else v for k, v in holder.items()}
            emit({"reply": None, "error": type(exc).__name__, "message": str(exc), "holder": holder})
        else:
            emit({"reply": reply})
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
