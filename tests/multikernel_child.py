"""A second kernel for tests/test_multikernel.py: a process that does one thing at a time on command.

``python tests/multikernel_child.py DB [LEASE_TTL [LEASE_TIMEOUT]]`` (``-``: the default) connects to the store,
prints ``{"ready": pid}`` and then reads one JSON command a line from stdin, answering each with one
``{"reply": ...}`` line on stdout (or ``{"reply": null, "error": ...}``):
``send`` (a turn: its text, or the error's class and message), ``block`` (a block's value as this process
sees it), ``search`` (archival search), ``delay`` (wrap this process's model for a spec: announce each call,
hang at call ``hang_at``; see letta_nb.bench.multikernel.DelayedModel), ``lose_lease`` (wrap it so that the
calls numbered in ``calls`` announce themselves and then wait until another process has taken the agent's
lease: the parent SIGSTOPs this process meanwhile, so the lease expires, see :class:`LeaseLossModel`; with
``"until": "queued"``, until another process queues for it),
``turns`` (several sends in a row), ``passages`` (several ``passages.create``), ``upload``, ``note_tool``
(register :func:`file_note` and attach it to an agent) and ``leases`` (this process's lease events of an
agent, counted). A ``send`` that never returns (a hung model call) leaves the process for the test to kill.

The tools below are registered by the test (the parent) under one name, first v1 then v2; they live here,
at module level in a file, because a stored tool is rebuilt from its source. :func:`file_note` is registered
by this process itself and calls this process's client from inside a turn.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import json
import sys
import threading
import time
from typing import Any

CLIENT: Any = None  # this process's client (main sets it), for file_note


def probe_v1() -> str:
    """Say which version of the probe tool ran."""
    return "probe version v1"


def probe_v2() -> str:
    """Say which version of the probe tool ran."""
    return "probe version v2"


def file_note(agent: str, text: str) -> str:
    """File a note in an agent's archival memory through the client (from inside that agent's turn).

    Args:
        agent: The agent's name.
        text: The note.
    """
    CLIENT.agents.passages.create(agent, text)
    return f"filed: {text}"


class LeaseLossModel:
    """Wraps a model: calls numbered in ``calls`` announce ``{"in_model": n}`` and then wait until the agent's
    lease token in the store is no longer the one this process held when the call began, that is, until
    another process took the lease (the parent pauses this process past the lease's expiry meanwhile); or,
    ``until="queued"``, until another process waits in the lease's queue."""

    def __init__(self, inner: Any, rt: Any, agent_id: str, calls: set[int], emit: Any, until: str = "taken"):
        self.inner, self.rt, self.agent_id, self.calls, self.emit = inner, rt, agent_id, calls, emit
        self.until = until
        self.count = itertools.count(1)

    def __getattr__(self, name: str) -> Any:  # name, context_window, capabilities: the wrapped model's
        return getattr(self.inner, name)

    def _lease(self) -> tuple[Any, ...]:
        from letta_nb.store.sqlite import leases as rows

        return self.rt.store.writer.read(functools.partial(rows.peek, agent_id=self.agent_id, now=time.time()))

    def _waiting(self, token: int) -> bool:
        lease = self._lease()
        return not lease[6] if self.until == "queued" else lease[0] == token

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        n = next(self.count)
        if n in self.calls:
            mine = self.rt.leases.held[self.agent_id].token
            self.emit({"in_model": n, "token": mine})
            while self._waiting(mine):  # a condition, polled: another's grant bumps the token, a waiter queues
                await asyncio.sleep(0.005)
        async for event in self.inner.stream(messages, tools):
            yield event


async def _forget_session(rt: Any, agent_id: str) -> None:
    rt.invalidate_agent(agent_id)  # on the runtime loop, where the session cache lives


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
    global CLIENT
    client = CLIENT = letta_nb.connect(argv[0], **leases)
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
            elif op == "lose_lease":
                rt = client.runtime
                agent_id = client.agents.retrieve(cmd["agent"]).id
                rt.model_cache.set(cmd["spec"], LeaseLossModel(rt.llm(cmd["spec"]), rt, agent_id, set(cmd["calls"]),
                                                               emit, cmd.get("until", "taken")))
                client._thread.run(_forget_session(rt, agent_id))  # retrieve() made it with the unwrapped model
                reply = "installed"
            elif op == "turns":
                reply = [client.agents.messages.create(cmd["agent"], text).text for text in cmd["texts"]]
            elif op == "passages":
                reply = [client.agents.passages.create(cmd["agent"], text).id for text in cmd["texts"]]
            elif op == "upload":
                report = client.agents.files.upload(cmd["agent"], cmd["path"], progress=False)
                reply = {f.path: [f.status, f.chunks] for f in report.files}
            elif op == "note_tool":
                client.tools.upsert_from_function(file_note)
                client.agents.tools.attach(cmd["agent"], "file_note")
                reply = "attached"
            elif op == "leases":
                frame = letta_nb.probes.leases(client)
                agent_id = client.agents.retrieve(cmd["agent"]).id
                reply = dict(collections.Counter(frame[frame["agent_id"] == agent_id]["event"]))
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
