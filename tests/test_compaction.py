"""LLM compaction (runtime/compaction.py) against a real loopback OpenAI server: the summariser is the
offline model's (llm/_offline_summary.py), which keeps the facts the user stated in the request the runtime
actually sent, so what the summary holds is decided by the runtime's code path (which messages it evicts,
whether it passes the previous summary on, whether the summary reaches the next prompt).

Every request the server received is counted with an independent tokenizer (tiktoken's cl100k_base, loaded
offline as in test_context_view.py), not with the runtime's estimate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.utils.capture import capture_output

import letta_nb
from letta_nb.testing.loopback import SUMMARY, LoopbackServer
from tests.agent_helpers import cl100k_tokens

CHAT = "/v1/chat/completions"
WINDOW = 2000
_PROSE = ("umbrella kettle lantern pillow garden mirror candle blanket window ladder anchor basket bottle button "
          "carpet castle cookie dragon engine feather forest guitar hammer island jacket kitten lemon magnet needle "
          "orange pencil pepper planet pocket rabbit rocket saddle silver spider summer tomato tunnel turtle violin "
          "wallet winter wizard yellow zipper marble")
WORDS = _PROSE.split()  # one token each in cl100k, none a stopword or a plural the offline model would strip


def _fact(i: int) -> tuple[int, str]:
    return 100 + i, WORDS[(7 * i) % len(WORDS)]


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


def _agent(client: letta_nb.Client, srv: LoopbackServer, name: str = "boxes", options: str = "",
           window: int = WINDOW) -> str:
    model = f"openai/loopback-chat?base_url={srv.base_url}&context_window={window}{options}"
    client.agents.create(name, model=model, embedding="hash", include_base_tools=False)
    return name


def _bodies(srv: LoopbackServer, summaries: bool) -> list[dict[str, Any]]:
    """Chat request bodies answered 200, in order: the summariser's, or the agent's steps."""
    out = []
    for r in list(srv.requests):
        if r["path"] == CHAT and r["status"] == 200:
            is_summary = "<evicted_messages>" in str(r["body"]["messages"][-1].get("content"))
            if is_summary == summaries:
                out.append(r["body"])
    return out


def _kept(summary: str, facts: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(n, w) for n, w in facts if re.search(rf"\b{n} {w}\b", summary)]


FACTS, FACTS_WINDOW = 150, 1200  # the window overflows again and again (>= 10 summaries) in 150 turns


def test_150_facts_every_request_fits_and_the_summary_keeps_the_evicted_ones(client: letta_nb.Client,
                                                                            srv: LoopbackServer) -> None:
    agent = _agent(client, srv, window=FACTS_WINDOW)
    for i in range(FACTS):
        n, word = _fact(i)
        r = client.agents.messages.create(agent, f"Box {n}: {word}.")
        assert r.stop_reason == "end_turn"

    # every request the server received fits the 2,000-token window, by an independent tokenizer
    sizes = [cl100k_tokens(b) for b in _bodies(srv, summaries=False) + _bodies(srv, summaries=True)]
    assert len(sizes) >= FACTS and max(sizes) <= FACTS_WINDOW, max(sizes)
    summary_requests = _bodies(srv, summaries=True)
    assert len(summary_requests) >= 10, len(summary_requests)  # the window overflowed again and again

    state = client.agents.retrieve(agent)
    in_window = {m.content for m in client.agents.messages.list(agent) if m.seq >= state.context_start_seq}
    evicted = [(n, w) for n, w in map(_fact, range(FACTS)) if f"Box {n}: {w}." not in in_window]
    assert 0.9 * FACTS <= len(evicted) < FACTS, len(evicted)
    kept = _kept(state.context_summary or "", evicted)
    assert len(kept) >= 0.8 * len(evicted), (len(kept), len(evicted), state.context_summary)
    # ... and that summary is what the next prompt carries (the agent's last request's system message)
    assert state.context_summary in _bodies(srv, summaries=False)[-1]["messages"][0]["content"]

    # later questions are answered from the summary alone: the fact is nowhere else in the request
    asked = [_fact(i) for i in range(20, FACTS - 10, 12)]
    right = 0
    for n, word in asked:
        srv.requests.clear()
        r = client.agents.messages.create(agent, f"What is in box {n}?")
        body = _bodies(srv, summaries=False)[-1]
        assert not any(f"Box {n}:" in str(m.get("content")) for m in body["messages"][1:])
        right += word in r.text and "summary" in r.text
    assert right >= 0.8 * len(asked), right

    steps = letta_nb.probes.steps(client)
    compacted = steps[steps["summary_tokens"] > 0]
    assert len(compacted) >= 10 and (compacted["summary_ms"] > 0).all()
    assert steps["summary_fallback"].isna().all()


def test_the_summariser_failing_falls_back_to_the_note_and_the_turn_goes_on(client: letta_nb.Client,
                                                                           srv: LoopbackServer) -> None:
    agent = _agent(client, srv, "failing", "&max_retries=1")
    srv.inject("500", "500", path=SUMMARY)  # both attempts of the first summary (the SDK retries a 5xx once)
    fell_back = None
    for i in range(60):
        n, word = _fact(i)
        r = client.agents.messages.create(agent, f"Box {n}: {word}.")
        assert r.stop_reason == "end_turn" and (f"Box {n}" in r.text or i == 0)  # (a greeting first)
        fell_back = next((s for s in r.steps if s.summary_fallback), None)
        if fell_back is not None:
            break
    assert fell_back is not None, "no step compacted in 60 turns"
    assert fell_back.summary_fallback.startswith("ProviderError") and "500" in fell_back.summary_fallback, \
        fell_back.summary_fallback
    state = client.agents.retrieve(agent)
    assert "left the context window" in (state.context_summary or "")  # today's note stands in
    assert srv.stats()["status 500"] == 2 and srv.stats()["injected"] == 2  # the agent's own steps never failed
    row = letta_nb.probes.steps(client).query("summary_fallback.notna()")
    assert len(row) == 1 and row.iloc[0]["summary_fallback"] == fell_back.summary_fallback


def test_a_slow_summariser_times_out_to_the_note(srv: LoopbackServer, tmp_path: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_NB_SUMMARIZER_TIMEOUT_S", "0.2")
    client = letta_nb.connect(str(tmp_path / "slow.db"))
    try:
        assert client.runtime.settings.summarizer_timeout_s == 0.2
        agent = _agent(client, srv, "slow")
        srv.inject("timeout", path=SUMMARY)  # the server stalls (hang_s) on the first summary request
        reason = None
        for i in range(60):
            n, word = _fact(i)
            r = client.agents.messages.create(agent, f"Box {n}: {word}.")
            assert r.stop_reason == "end_turn"
            reason = next((s.summary_fallback for s in r.steps if s.summary_fallback), None)
            if reason is not None:
                break
        assert reason is not None and reason.startswith("timeout") and "summarizer_timeout_s" in reason
        assert "left the context window" in (client.agents.retrieve(agent).context_summary or "")
    finally:
        client.close()


def test_a_configured_summarizer_model_writes_the_summary(srv: LoopbackServer, tmp_path: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer() as cheap:
        monkeypatch.setenv("LETTA_NB_SUMMARIZER_MODEL", f"openai/cheap-model?base_url={cheap.base_url}")
        client = letta_nb.connect(str(tmp_path / "cheap.db"))
        try:
            agent = _agent(client, srv, "thrifty")
            for i in range(60):
                n, word = _fact(i)
                client.agents.messages.create(agent, f"Box {n}: {word}.")
            summaries = _bodies(cheap, summaries=True)
            assert summaries and all(b["model"] == "cheap-model" for b in summaries)
            assert not _bodies(srv, summaries=True) and not _bodies(cheap, summaries=False)
            assert client.agents.retrieve(agent).context_summary in _bodies(srv, summaries=False)[-1]["messages"][0][
                "content"]
        finally:
            client.close()


def test_a_preview_summarises_ahead_and_the_turn_reuses_that_summary(client: letta_nb.Client,
                                                                     srv: LoopbackServer) -> None:
    agent = _agent(client, srv, "ahead")
    text = "Box 999: velvet."
    i = 0
    while client.agents.context(agent).total + 12 <= 0.9 * WINDOW:  # until the next turn must compact first
        n, word = _fact(i)
        client.agents.messages.create(agent, f"Box {n}: {word}.")
        i += 1
    before = len(_bodies(srv, summaries=True))

    preview = client.agents.messages.preview(agent, text)

    assert len(_bodies(srv, summaries=True)) > before  # the preview had the summary written ...
    assert client.agents.retrieve(agent).context_summary is None  # ... and stored nothing
    srv.requests.clear()
    client.agents.messages.create(agent, text)
    assert not _bodies(srv, summaries=True)  # the turn reused it: no second summary request
    assert _bodies(srv, summaries=False)[0] == preview  # and sent exactly the previewed request
    assert _kept(client.agents.retrieve(agent).context_summary or "", [_fact(0)]) == [_fact(0)]


def test_compact_summarises_now_and_reset_empties_the_window(client: letta_nb.Client, srv: LoopbackServer) -> None:
    agent = _agent(client, srv, "manual")
    for i in range(4):
        n, word = _fact(i)
        client.agents.messages.create(agent, f"Box {n}: {word}.")
    before = client.agents.context(agent)
    assert before.summary_tokens == 0 and before.messages_in_window == 8

    state = client.agents.messages.compact(agent)

    after = client.agents.context(agent)
    assert after.messages_in_window == 2  # the last turn stays verbatim
    assert _kept(state.context_summary or "", [_fact(i) for i in range(3)]) == [_fact(i) for i in range(3)]
    assert f"{_fact(3)[0]}" not in (state.context_summary or "")  # the kept turn is not summarised
    r = client.agents.messages.create(agent, f"What is in box {_fact(0)[0]}?")
    assert _fact(0)[1] in r.text

    import asyncio

    state = asyncio.run(client.agents.messages.acompact(agent))  # the async twin
    assert client.agents.context(agent).messages_in_window == 2

    state = client.agents.messages.reset(agent)
    assert client.agents.context(agent).messages_in_window == 0 and state.context_summary is None
    assert len(client.agents.messages.list(agent)) == 10  # recall memory keeps every message (5 turns)


def test_compact_and_reset_magics(shell: Any) -> None:
    from letta_nb.notebook._commands import help_text
    from letta_nb.notebook._session import current_session

    with LoopbackServer() as srv:
        client = current_session().client
        agent = _agent(client, srv, "magic")
        for i in range(3):
            n, word = _fact(i)
            client.agents.messages.create(agent, f"Box {n}: {word}.")
        with capture_output() as out:
            notice = shell.run_line_magic("letta", f"compact {agent}")
        assert "Compacted 'magic': 4 messages folded" in repr(notice), (repr(notice), out.stdout)
        assert _kept(client.agents.retrieve(agent).context_summary or "", [_fact(0), _fact(1)]) == [_fact(0), _fact(1)]
        notice = shell.run_line_magic("letta", f"reset {agent}")
        assert "Reset 'magic'" in repr(notice) and client.agents.context(agent).messages_in_window == 0
        from IPython.core.error import UsageError

        with pytest.raises(UsageError, match="nope"):
            shell.run_line_magic("letta", "compact nope")
        assert "%letta compact" in help_text() and "%letta reset" in help_text()
