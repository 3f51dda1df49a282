"""``python -m letta_nb demo``: a scripted conversation with the offline model, no API key needed.

It shows the three memories at work: a stated fact written to core memory, a note filed in archival
memory, both recalled in later turns, and every step's tool calls and timings.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable

import letta_nb

SCRIPT = (
    "Hi there!",
    "My name is Ada.",
    "I'm studying memory systems for language agents.",
    "Remember that the MemGPT paper pages memory in and out of the context window like an OS.",
    "What is my name?",
    "What does the MemGPT paper do with memory?",
    "What is my favourite colour?",
)


def run(store: str | None = None, out: Callable[[str], object] = print) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="letta_nb_demo_") as tmp,
        letta_nb.connect(store or f"{tmp}/demo.db") as client,
    ):
        out(f"letta_nb {letta_nb.__version__} demo: store {client.store_location}, model 'offline', embedder 'hash'\n")
        agent = client.agents.create(
            "demo",
            memory_blocks=[
                {"label": "persona", "value": "A concise research assistant."},
                {"label": "human", "value": ""},
            ],
        )
        for text in SCRIPT:
            t = time.perf_counter()
            response = client.agents.messages.create(agent.id, text)
            wall = (time.perf_counter() - t) * 1000
            out(f"user   > {text}")
            for step in response.steps:
                tools = ", ".join(n for n in step.tool_names if n != "send_message") or "-"
                out(f"         step {step.step_index}: tools {tools:<24} llm {step.llm_ms:6.2f} ms  "
                    f"tools {step.tools_ms:6.2f} ms  commit {step.db_ms:5.2f} ms")
            out(f"agent  > {response.text}   [{wall:.1f} ms, {response.usage.total_tokens} tokens]\n")
        human = client.agents.blocks.retrieve(agent.id, "human").value
        out("core memory 'human' block now holds:\n  " + human.replace("\n", "\n  "))
        passages = client.agents.passages.list(agent.id)
        out(f"archival memory holds {len(passages)} passage(s); recall memory "
            f"{len(client.agents.messages.list(agent.id))} messages.")
