"""The context-window view (``client.agents.context``), the request preview (``messages.preview``) and
``%letta context``, checked against the requests a real loopback OpenAI server received.

Two counts of a received request appear here. The runtime's estimate (llm/tokens.py: ~4 characters a
token plus 4 a message) is what ``context()`` reports and what eviction budgets by, so the view must equal
it to the token. The issue also asks for an independent tokenizer: tiktoken's ``cl100k_base``, loaded
offline from the copy llama-index-core bundles (embeddings/tokens.py), counting each message as OpenAI's
cookbook does (3 per message + role + content, 3 to prime the reply) and the tools as their JSON. Measured
here: the estimate undercounts that by ~4% (tool-schema JSON runs ~3.7 characters a token, prose ~4.3),
inside the 5% the issue allows but not by much; the assertion keeps the exact figure visible on failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import letta_nb
from letta_nb.llm.tokens import estimate_tokens, message_tokens, tools_tokens
from letta_nb.runtime.memory import render_memory
from letta_nb.testing.loopback import LoopbackServer
from tests.agent_helpers import cl100k_tokens

CHAT = "/v1/chat/completions"


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def _model(srv: LoopbackServer, window: int | None = None) -> str:
    spec = f"openai/loopback-chat?base_url={srv.base_url}"
    return spec + (f"&context_window={window}" if window else "")


def _received(srv: LoopbackServer) -> list[dict[str, Any]]:
    """The chat request bodies the server received, in order."""
    return [r["body"] for r in srv.requests if r["path"] == CHAT and r["status"] == 200]


def _estimate(body: dict[str, Any]) -> int:
    return sum(message_tokens(m) for m in body["messages"]) + tools_tokens(body.get("tools") or [])


def _next_turn_request(client: letta_nb.Client, srv: LoopbackServer, agent: str, text: str) -> dict[str, Any]:
    srv.requests.clear()
    client.agents.messages.create(agent, text)
    return _received(srv)[0]


def _stored(client: letta_nb.Client, agent: str) -> tuple[Any, ...]:
    """Everything a turn would change: messages, steps, the agent's window and blocks, passages."""
    state = client.agents.retrieve(agent)
    return (
        [(m.id, m.seq, m.content) for m in client.agents.messages.list(agent)],
        client.query("SELECT COUNT(*) AS n FROM steps")["n"].tolist(),
        (state.last_seq, state.context_start_seq, state.context_summary, state.version),
        [(b.label, b.value) for b in state.blocks],
        [p.id for p in client.agents.passages.list(agent)],
    )


def test_context_parts_add_up_to_the_request_the_server_received(client: letta_nb.Client,
                                                                  srv: LoopbackServer) -> None:
    agent = client.agents.create("ctx", model=_model(srv), embedding="hash")
    for text in ("My name is Ada.", "I study memory systems for language agents.", "What is my name?"):
        client.agents.messages.create(agent.id, text)
    client.agents.passages.create(agent.id, "The MemGPT paper pages memory like an OS.")
    client.agents.passages.create(agent.id, "Recall memory keeps every message.")
    view = client.agents.context("ctx")
    state = client.agents.retrieve("ctx")
    recall = len(client.agents.messages.list("ctx"))

    body = _next_turn_request(client, srv, "ctx", "Where do I live?")

    user = {"role": "user", "content": "Where do I live?"}
    assert body["messages"][-1] == user
    # the view is the runtime's count of exactly this request, less the new user message
    assert view.total + message_tokens(user) == _estimate(body)
    assert view.system_tokens + view.core_memory_tokens + view.summary_tokens == message_tokens(body["messages"][0])
    assert view.core_memory_tokens == estimate_tokens("\n\n" + render_memory(state.blocks)) > 0
    assert view.summary_tokens == 0  # nothing left the window yet
    assert view.tools_tokens == tools_tokens(body["tools"]) > 0
    assert view.messages_tokens == sum(message_tokens(m) for m in body["messages"][1:-1])
    assert view.messages_in_window == len(body["messages"]) - 2
    assert view.recall_messages == recall == view.messages_in_window  # no eviction, no reset: all in the window
    assert view.archival_passages == 2
    assert view.context_window == 128_000 and view.free == 128_000 - view.total
    # ... and within 5% of an independent tokenizer's count of it (see the module docstring for the gap)
    exact = cl100k_tokens(body)
    assert abs(view.total + message_tokens(user) - exact) <= 0.05 * exact, (view.total, exact)


def test_summary_tokens_appear_once_messages_leave_the_window_and_totals_still_match(
        client: letta_nb.Client, srv: LoopbackServer) -> None:
    client.agents.create("small", model=_model(srv, window=2600), embedding="hash")
    for i in range(30):
        client.agents.messages.create("small", f"Please remember that item number {i} is a small blue teapot.")
    view = client.agents.context("small")
    assert view.summary_tokens > 0  # the note on what left the window is in the system prompt
    assert view.messages_in_window < view.recall_messages == len(client.agents.messages.list("small"))
    assert view.total <= view.context_window

    text = "And item 30 is a green kettle."
    preview = client.agents.messages.preview("small", text)
    body = _next_turn_request(client, srv, "small", text)
    assert preview == body
    assert body["messages"][0]["content"].endswith("</conversation_summary>")
    assert _estimate(body) == view.total + message_tokens({"role": "user", "content": text})
    exact = cl100k_tokens(body)
    assert abs(_estimate(body) - exact) <= 0.05 * exact, (_estimate(body), exact)


def test_preview_of_a_turn_that_must_evict_shows_the_evicted_request(client: letta_nb.Client,
                                                                     srv: LoopbackServer) -> None:
    client.agents.create("full", model=_model(srv, window=2600), embedding="hash")
    text = "Please remember that the kettle is green."
    while True:  # fill the window until the next message would make the turn evict first
        view = client.agents.context("full")
        if view.total + message_tokens({"role": "user", "content": text}) > 0.9 * view.context_window:
            break
        client.agents.messages.create("full", f"Please remember that item {view.recall_messages} is a blue teapot.")
    before = _stored(client, "full")

    preview = client.agents.messages.preview("full", text)

    assert _stored(client, "full") == before  # the eviction was planned on a copy, not applied
    assert len(preview["messages"]) - 2 < view.messages_in_window  # messages left the window in the preview
    assert preview == _next_turn_request(client, srv, "full", text)  # ... as they did in the turn
    after = client.agents.context("full")
    assert after.summary_tokens > 0 and after.total < view.total  # (the note is capped: it need not grow)


def test_preview_is_the_body_the_server_receives_and_writes_nothing(client: letta_nb.Client,
                                                                     srv: LoopbackServer) -> None:
    client.agents.create("pv", model=_model(srv), embedding="hash")
    client.agents.messages.create("pv", "My name is Ada.")
    before = _stored(client, "pv")
    requests = len(srv.requests)

    preview = client.agents.messages.preview("pv", "What is my name?")

    assert _stored(client, "pv") == before and len(srv.requests) == requests  # nothing written, nothing sent
    assert preview["messages"][-1] == {"role": "user", "content": "What is my name?"}
    assert {t["function"]["name"] for t in preview["tools"]} >= {"send_message", "conversation_search"}
    assert preview == _next_turn_request(client, srv, "pv", "What is my name?")
    # letta_client's messages=[...] form previews the same request
    assert client.agents.messages.preview("pv", messages=[{"role": "user", "content": "Hi"}])["messages"][-1] == \
        {"role": "user", "content": "Hi"}


def test_preview_offers_the_tools_and_tool_choice_the_rules_allow(client: letta_nb.Client,
                                                                  srv: LoopbackServer) -> None:
    rules = [{"type": "run_first", "tool_name": "conversation_search"}]
    client.agents.create("ruled", model=_model(srv), embedding="hash", tool_rules=rules)

    preview = client.agents.messages.preview("ruled", "What did I say before?")

    assert preview["tool_choice"] == {"type": "function", "function": {"name": "conversation_search"}}
    body = _next_turn_request(client, srv, "ruled", "What did I say before?")
    assert preview == body


def test_async_twins_match_the_sync_ones(client: letta_nb.Client) -> None:
    client.agents.create("off", model="offline", embedding="hash")
    client.agents.messages.create("off", "My name is Ada.")

    async def main() -> tuple[letta_nb.ContextWindow, dict[str, Any]]:
        return await client.agents.acontext("off"), await client.agents.messages.apreview("off", "Hello")

    view, preview = asyncio.run(main())
    assert view == client.agents.context("off")
    # the offline model sends no HTTP: the preview is what it is given, in the OpenAI-compatible shape
    assert preview["model"] == "offline" and preview["messages"][0]["role"] == "system"
    assert preview == client.agents.messages.preview("off", "Hello")


def test_bad_input_names_the_argument(client: letta_nb.Client) -> None:
    client.agents.create("off", model="offline", embedding="hash")
    with pytest.raises(letta_nb.AgentNotFoundError, match="off"):
        client.agents.context("of")
    with pytest.raises(letta_nb.InvalidArgumentError, match="input"):
        client.agents.messages.preview("off", "   ")


def test_view_renders_as_a_frame_a_gauge_and_a_chart(client: letta_nb.Client) -> None:
    client.agents.create("gauge", model="offline", embedding="hash")
    view = client.agents.context("gauge")
    frame = view.to_dataframe()
    assert list(frame.index) == ["system prompt", "core memory", "summary", "tool schemas", "messages", "total",
                                 "window"]
    assert frame.loc["total", "tokens"] == view.total and frame.loc["window", "tokens"] == view.context_window
    html = view._repr_html_()
    assert "gauge" in html and f"{view.total:,} of {view.context_window:,}" in html
    fig = view.plot()
    bars = fig.axes[0].patches
    assert [round(p.get_width()) for p in bars] == [frame.loc[p, "tokens"] for p in frame.index[:5]]


def test_letta_context_magic_shows_the_chart_and_returns_the_frame(shell: InteractiveShell) -> None:
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})  # what a kernel's inline backend sets up: figures display as PNG
    shell.run_line_magic("letta", "create sam")
    with capture_output():
        shell.run_cell_magic("letta", "", "My name is Ada.")
    with capture_output() as cap:
        frame = shell.run_line_magic("letta", "context")
    assert frame.loc["messages", "tokens"] > 0 and "core memory" in frame.index
    assert any("image/png" in out.data for out in cap.outputs)  # the stacked bar chart
    assert shell.run_line_magic("letta", "context sam").equals(frame)
    with pytest.raises(UsageError, match="sam"):
        shell.run_line_magic("letta", "context sma")
