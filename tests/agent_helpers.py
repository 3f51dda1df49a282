"""Helpers shared by the agent-loop tests: /call lines, the consistency check, a prompt recorder, waiting, lease
events and child processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import letta_nb
from letta_nb.llm.registry import resolve_model

SMALL = "offline?context_window=2000"  # a window small enough to make a conversation evict
SLOW = "offline?latency_ms=300&tps=20"  # slow enough to cancel mid-reply


def on_loop(client: letta_nb.Client, coro: Any) -> Any:
    """Run a runtime coroutine (store / session internals) on the client's runtime loop."""
    return client._thread.run(coro)


def call(name: str, raw: str | None = None, **args: Any) -> str:
    """A ``/call`` line for the offline model: exactly this tool, with these raw arguments."""
    return f"/call {name} {raw if raw is not None else json.dumps(args)}"


def tool_messages(messages: list[letta_nb.Message], name: str | None = None) -> list[letta_nb.Message]:
    return [m for m in messages if m.role == "tool" and m.name != "send_message" and (name is None or m.name == name)]


def assert_consistent(client: letta_nb.Client, agent: Any) -> list[letta_nb.Message]:
    """Recall, step rows, the agent row and the cached session all tell the same story."""
    agent_id = on_loop(client, client.runtime.resolve_agent(agent))
    msgs = client.agents.messages.list(agent_id)
    assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1)), "seq must be contiguous from 1"
    stored = on_loop(client, client.runtime.store.load_agent(agent_id))
    assert stored.last_seq == len(msgs)
    steps = on_loop(client, client.runtime.store.step_rows(agent_id))
    assert sum(s.n_messages for s in steps) == len(msgs)
    step_ids = {s.id for s in steps}
    assert all(m.step_id in step_ids for m in msgs)
    calls: dict[str, str | None] = {}
    for m in msgs:
        for c in m.tool_calls:
            calls[c.id] = m.step_id
        if m.role == "tool":
            assert calls.get(m.tool_call_id) == m.step_id, f"tool message {m.seq} answers no call of its step"
    session = on_loop(client, client.runtime.session(agent_id))
    assert session.agent.last_seq == stored.last_seq
    assert {b.label: b.value for b in session.agent.blocks} == {b.label: b.value for b in stored.blocks}
    assert client.runtime.running == {}
    assert len(client.runtime.locks) == 0
    return msgs


class RecordingModel:
    """Wraps a model and keeps every prompt (messages, tools) it was asked to complete."""

    supports_parallel_tool_calls = True

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.context_window = inner.context_window
        self.prompts: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]):
        self.prompts.append(([dict(m) for m in messages], list(tools)))
        async for event in self.inner.stream(messages, tools):
            yield event


def record_prompts(client: letta_nb.Client, spec: str = "offline") -> RecordingModel:
    """Make ``spec`` resolve to a recording wrapper in this runtime (install before creating the agent)."""
    recorder = RecordingModel(resolve_model(spec))
    client.runtime.model_cache.set(spec, recorder)
    return recorder


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


# ---- user tools several test modules attach (module level: their source is stored) ----------------------


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: First addend.
        b: Second addend.
    """
    return a + b


def word_count(text: str) -> int:
    """Count the words of a text.

    Args:
        text: The text.
    """
    return len(text.split())


def repeat(text: str, times: int = 2) -> str:
    """Repeat a text.

    Args:
        text: The text.
        times: How often.
    """
    return " ".join([text] * times)


def cl100k_tokens(body: dict[str, Any]) -> int:
    """Tokens of an OpenAI chat request ``body`` by an independent tokenizer: tiktoken's cl100k (the copy
    bundled with llama-index-core, so it works offline), counted as OpenAI's chat format does."""
    from letta_nb.embeddings.tokens import load_encoding

    enc = load_encoding("cl100k_base")
    assert enc is not None, "cl100k_base not found offline (llama-index-core bundles it; see embeddings/tokens.py)"
    n = 3  # every reply is primed with <|start|>assistant<|message|>
    for m in body["messages"]:
        n += 3 + len(enc.encode(m["role"])) + len(enc.encode(m.get("content") or ""))
        for call in m.get("tool_calls") or ():
            n += 3 + len(enc.encode(call["function"]["name"])) + len(enc.encode(call["function"]["arguments"]))
    return n + (len(enc.encode(json.dumps(body["tools"]))) if body.get("tools") else 0)


def lease_events(client: letta_nb.Client) -> list[str]:
    """The client's lease events so far (runtime/leases.py: acquired, reused, waited, released, ...)."""
    return [e.event for e in client._runtime.leases.events]


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    """``code`` (dedented) in a fresh Python process with ``args`` as ``sys.argv[1:]``; :func:`finish` waits."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(child: subprocess.Popen[str]) -> str:
    """The child's output, once it has exited cleanly (its stderr in the failure otherwise)."""
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return out
