"""The OpenAI-compatible model client over real HTTP, and an agent on ``openai/...`` end to end."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from letta_nb.errors import InvalidArgumentError, ModelNotFoundError, ProviderError
from letta_nb.llm.base import Completion, TextDelta, ToolCallDelta, complete
from letta_nb.llm.openai_compat import OpenAICompatModel
from letta_nb.llm.registry import resolve_model
from letta_nb.testing import Latency, Limits, LoopbackServer

MSGS = [{"role": "user", "content": "hello"}]


async def collect(model, messages=MSGS, tools=()):
    try:
        return [ev async for ev in model.stream(list(messages), list(tools))]
    finally:
        await model.aclose()


def test_streaming_text_and_tool_calls_with_usage_and_ttft():
    with LoopbackServer(latency=Latency(base_ms=30)) as srv:
        srv.reply("Saving it.", [
            ("core_memory_append", {"label": "human", "content": "Name: Ada Lovelace, mathematician"}),
            ("send_message", {"message": "Noted!"}),
        ])
        events = asyncio.run(collect(resolve_model(f"openai/loopback-chat?base_url={srv.base_url}")))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    final = events[-1]
    assert isinstance(final, Completion) and text == "Saving it." == final.content
    heads = [d for d in deltas if d.name]
    assert [(d.index, d.name) for d in heads] == [(0, "core_memory_append"), (1, "send_message")]
    assert all(d.id for d in heads) and len(deltas) > 3  # arguments arrive in pieces
    assert [c.name for c in final.tool_calls] == ["core_memory_append", "send_message"]
    assert final.tool_calls[0].parsed_arguments() == {"label": "human", "content": "Name: Ada Lovelace, mathematician"}
    assert "".join(d.arguments for d in deltas if d.index == 1) == final.tool_calls[1].arguments
    assert final.finish_reason == "tool_calls"
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0  # the server's count
    assert final.ttft_ms >= 30  # the server's latency before the first token


def test_429_then_success_honours_retry_after():
    with LoopbackServer(limits=Limits(retry_after_s=0.3)) as srv:
        srv.inject("429", path="/v1/chat/completions")
        model = resolve_model(f"openai/loopback-chat?base_url={srv.base_url}")
        t0 = time.perf_counter()
        final = asyncio.run(complete_and_close(model))
        waited = time.perf_counter() - t0
        assert [r["status"] for r in srv.requests] == [429, 200]
    assert final.content and waited >= 0.3  # it waited out Retry-After, not the SDK's own backoff guess


async def complete_and_close(model):
    try:
        return await complete(model, MSGS, [])
    finally:
        await model.aclose()


def test_5xx_storm_retried_then_a_clear_error_without_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    with LoopbackServer() as srv:
        srv.inject("500", "502", path="/v1/chat/completions")
        ok = asyncio.run(complete_and_close(resolve_model(f"openai/m?base_url={srv.base_url}&max_retries=2")))
        assert ok.content
        srv.inject("503", "503", "503", path="/v1/chat/completions")
        model = resolve_model(f"openai/m?base_url={srv.base_url}&max_retries=2")
        with pytest.raises(ProviderError) as e:
            asyncio.run(complete_and_close(model))
    assert e.value.status == 503 and srv.base_url in str(e.value)
    assert "sk-secret-value" not in str(e.value) + repr(model) + model.spec


def test_malformed_stream_and_unreachable_server_are_provider_errors():
    with LoopbackServer() as srv:
        srv.inject("malformed", path="/v1/chat/completions")
        with pytest.raises(ProviderError, match="could not read"):
            asyncio.run(collect(resolve_model(f"openai/m?base_url={srv.base_url}")))
        url = srv.base_url
    with pytest.raises(ProviderError, match="cannot reach"):
        asyncio.run(collect(resolve_model(f"openai/m?base_url={url}&max_retries=0")))


def test_wrong_key_is_401_with_a_hint(monkeypatch):
    with LoopbackServer(api_key="sk-right") as srv:
        model = resolve_model(f"openai/m?base_url={srv.base_url}", api_keys={"openai": "sk-wrong"})
        with pytest.raises(ProviderError, match="HTTP 401.*OPENAI_API_KEY") as e:
            asyncio.run(collect(model))
        assert "sk-wrong" not in str(e.value)
        good = resolve_model(f"openai/m?base_url={srv.base_url}", api_keys={"openai": "sk-right"})
        assert asyncio.run(collect(good))[-1].content


def test_model_specs(monkeypatch):
    with pytest.raises(InvalidArgumentError, match="set OPENAI_API_KEY"):
        resolve_model("openai/gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    m = resolve_model("openai/gpt-4o-mini")
    assert isinstance(m, OpenAICompatModel)
    assert m.base_url == "https://api.openai.com/v1" and m.context_window == 128_000
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert resolve_model("openai/gpt-4o-mini").base_url == "http://127.0.0.1:9/v1"
    ollama = resolve_model("ollama/llama3.2?context_window=4096&temperature=0.2")
    assert ollama.base_url == "http://127.0.0.1:11434/v1"
    assert ollama.context_window == 4096 and ollama.name == "ollama/llama3.2"
    for bad, needle in [("openai/x?api_key=sk-1", "do not put an API key"), ("openai/x?nope=1", "valid options"),
                        ("openai/x?context_window=big", "not a valid int"), ("openai", "names no model")]:
        with pytest.raises(InvalidArgumentError, match=needle):
            resolve_model(bad)
    with pytest.raises(ModelNotFoundError, match="ollama/llama3.2"):
        resolve_model("anthropic/claude")


def test_agent_on_openai_model_holds_a_conversation_with_tool_calls_over_http(client):
    with LoopbackServer(latency=Latency(base_ms=2)) as srv:
        model = f"openai/loopback-chat?base_url={srv.base_url}"
        embedding = f"openai/text-embedding-3-small?base_url={srv.base_url}&dimensions=384"
        agent = client.agents.create(name="wire", model=model, embedding=embedding)
        r1 = client.agents.messages.create(agent.id, input="My name is Ada.")
        assert [s.tool_names for s in r1.steps] == [("core_memory_append",), ("send_message",)]
        assert "Name: Ada" in client.agents.blocks.retrieve(agent.id, "human").value
        client.agents.passages.create(agent.id, text="The MemGPT paper pages memory in and out of context.")
        events = list(client.agents.messages.stream(agent.id, input="What did the MemGPT paper say?"))
        r2 = client.agents.messages.create(agent.id, input="What is my name?")
        assert "Ada" in r2.text
        stats = srv.stats()
        assert stats["requests /v1/chat/completions"] >= 5 and stats["inputs_embedded"] >= 2
        hits = client.agents.passages.search(agent.id, "MemGPT paging", top_k=1)
        assert hits and "MemGPT" in hits[0].text
    kinds = {type(e).__name__ for e in events}
    assert any("MemGPT" in json.dumps(getattr(e, "__dict__", {}), default=str) for e in events), kinds
    rt = client.runtime
    shared = rt._http
    assert rt.llm(model)._sdk._sdk_http is shared is rt.embedder(embedding)._sdk._sdk_http  # one shared httpx client
    client.close()
    assert shared.is_closed and rt._http is None  # closed with the runtime


def test_connect_api_keys_reach_the_endpoint_but_never_the_store_or_a_repr(tmp_path):
    import letta_nb
    from tests.store_query import query

    key = "sk-connect-secret-123"
    with pytest.raises(InvalidArgumentError, match="api_keys must be a dict") as e:
        letta_nb.connect(tmp_path / "bad.db", api_keys={"openai": 42})
    assert "42" not in str(e.value)
    path = tmp_path / "k.db"
    with LoopbackServer(api_key=key, latency=Latency(base_ms=1)) as srv, \
            letta_nb.connect(path, api_keys={"OpenAI": key}) as client:
        model = f"openai/loopback-chat?base_url={srv.base_url}"
        agent = client.agents.create(name="keyed", model=model)
        r = client.agents.messages.create(agent, "My name is Ada.")  # the server refuses any other key (401)
        assert r.stop_reason == "end_turn"
        shown = " ".join(repr(x) for x in (client, client.runtime.llm(model), agent, r, *r.messages))
        assert key not in shown and key not in agent._repr_html_()
    for file in (path, tmp_path / "k.db-wal"):  # the database and whatever its log still holds
        assert not file.exists() or key.encode() not in file.read_bytes()
    assert query(str(path), "SELECT count(*) FROM agents WHERE model LIKE ?", f"%{key}%") == [(0,)]
