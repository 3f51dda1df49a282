"""The loopback server, driven by the real ``openai`` SDK and raw HTTP: shapes, limits, faults, concurrency."""

from __future__ import annotations

import base64
import json
import threading

import httpx
import numpy as np
import openai
import pytest

from letta_nb.embeddings.hash import hash_vectors
from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.text_calls import parse_text_call
from letta_nb.testing import Limits, LoopbackServer
from letta_nb.testing._api import digest_vectors
from tests.agent_helpers import wait_until


@pytest.fixture
def srv():
    with LoopbackServer() as s:
        yield s


def sdk(s: LoopbackServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.base_url, api_key="test-key", max_retries=kw.pop("max_retries", 0), **kw)


def test_models_and_embeddings_float_and_base64(srv):
    c = sdk(srv)
    assert {m.id for m in c.models.list().data} == {"loopback-chat", "text-embedding-3-small"}
    texts = ["the cat sat on the mat", "a cat on a mat", "quarterly revenue grew"]
    floats = c.embeddings.create(model="m", input=texts, encoding_format="float")
    b64 = c.embeddings.create(model="m", input=texts, encoding_format="base64", dimensions=384)
    got = np.array([d.embedding for d in floats.data], dtype=np.float32)
    raw = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype=np.float32) for d in b64.data])
    np.testing.assert_allclose(got, hash_vectors(texts), atol=1e-6)
    np.testing.assert_array_equal(raw, hash_vectors(texts))
    assert [d.index for d in b64.data] == [0, 1, 2] and floats.usage.prompt_tokens > 0
    native = c.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
    assert len(native.data[0].embedding) == 1536  # like OpenAI: the model's native size unless asked


def test_digest_vectors_tell_every_text_apart():
    texts = [f"chunk {i}" for i in range(500)] + ["chunk 1"]
    v = digest_vectors(texts, 384)
    sims = v @ v.T
    np.fill_diagonal(sims, 0)
    assert np.isclose(np.linalg.norm(v, axis=1), 1).all()
    assert sims[1, 500] > 0.9999 and np.sort(sims[:500, :500].ravel())[-1] < 0.9


def test_chat_streaming_tool_calls_and_usage(srv):
    srv.reply("Let me note that.", [("core_memory_append", {"label": "human", "content": "Name: Ada, a long value"})])
    chunks = list(sdk(srv).chat.completions.create(
        model="loopback-chat", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert text == "Let me note that."
    assert calls[0].id and calls[0].function.name == "core_memory_append" and len(calls) > 2  # args in pieces
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"label": "human", "content": "Name: Ada, a long value"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_chat_without_script_runs_the_offline_rules(srv):
    r = sdk(srv).chat.completions.create(model="loopback-chat", messages=[{"role": "user", "content": "hello"}])
    assert "offline model" in r.choices[0].message.content and r.usage.completion_tokens > 0


@pytest.mark.parametrize(("payload", "needle"), [
    ({"model": "m", "input": ["ok", "  "]}, "input[1]' is invalid"),
    ({"model": "m", "input": []}, "non-empty"),
    ({"model": "m", "input": ["w"] * 5}, "at most 4 inputs"),
    ({"model": "m", "input": ["word " * 40]}, "maximum context length is 30 tokens"),
    ({"model": "m", "input": ["word " * 28, "word " * 28]}, "max 50 tokens per request"),
])
def test_embedding_limits_answer_openai_shaped_400s(payload, needle):
    with (
        LoopbackServer(limits=Limits(max_inputs=4, max_input_tokens=30, max_request_tokens=50)) as s,
        pytest.raises(openai.BadRequestError) as e,
    ):
        sdk(s).embeddings.create(**payload)
    assert needle in e.value.message


def test_malformed_request_body_and_unknown_route(srv):
    root = srv.base_url
    r = httpx.post(f"{root}/embeddings", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    assert httpx.post(f"{root}/nope", json={}).status_code == 404


def test_injected_faults_reach_the_sdk(srv):
    c = sdk(srv)
    srv.inject("503", "malformed", "disconnect", "short")
    with pytest.raises(openai.InternalServerError):
        c.embeddings.create(model="m", input=["a"])
    with pytest.raises(Exception) as bad:  # half a JSON body
        c.embeddings.create(model="m", input=["a"])
    assert not isinstance(bad.value, openai.APIStatusError)
    with pytest.raises(openai.APIConnectionError):
        c.embeddings.create(model="m", input=["a"])
    short = c.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
    assert len(short.data) == 1
    assert len(c.embeddings.create(model="m", input=["a", "b"]).data) == 2  # faults used up
    with pytest.raises(InvalidArgumentError, match="unknown fault"):
        srv.inject("418")


def test_429_then_success_with_the_sdk_honouring_retry_after():
    with LoopbackServer(limits=Limits(retry_after_s=0.2)) as s:
        s.inject("429")
        r = sdk(s, max_retries=2).embeddings.create(model="m", input=["a"])
        assert len(r.data) == 1
        assert [q["status"] for q in s.requests] == [429, 200]


def test_api_key_is_checked_when_configured():
    with LoopbackServer(api_key="sk-right") as s:
        with pytest.raises(openai.AuthenticationError):
            sdk(s).embeddings.create(model="m", input=["a"])
        assert openai.OpenAI(base_url=s.base_url, api_key="sk-right").embeddings.create(model="m", input="a").data


def test_sixteen_concurrent_requests_eight_served_eight_throttled():
    with LoopbackServer(limits=Limits(max_concurrent=8)) as s:
        # Admitted requests are held until all sixteen reached the server (instead of a latency that a slow
        # machine starting sixteen threads could outlast, letting a late ninth request take a freed slot).
        all_arrived = threading.Event()
        s.sleep = lambda seconds: all_arrived.wait(120)  # where the server would wait out its latency
        c = sdk(s)
        start = threading.Barrier(16)
        results: list[str] = []

        def call() -> None:
            start.wait()
            try:
                c.embeddings.create(model="m", input=["x"])
                results.append("ok")
            except openai.RateLimitError as e:
                assert e.response.headers["retry-after-ms"] == "50"
                results.append("429")

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        wait_until(lambda: s.stats().get("requests /v1/embeddings") == 16, "all sixteen requests", timeout=120)
        all_arrived.set()
        for t in threads:
            t.join()
        assert sorted(results) == ["429"] * 8 + ["ok"] * 8
        assert s.stats()["max_in_flight"] == 8


# ---- any body gets an answer ------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
HI = [{"role": "user", "content": "hi"}]
SURROGATE_TOOL = [{"type": "function", "function": {"name": "\ud800", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    (CHAT, json.dumps({"model": "m", "messages": HI, "tools": SURROGATE_TOOL}), 200, ""),  # the crash
    (CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi \ud800"}]}), 200, ""),
    (CHAT, json.dumps({"model": "m", "messages": [1, 2]}), 400, "messages[0]"),
    (CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": [1]}]}), 400, "content"),
    (CHAT, json.dumps({"model": "m", "messages": [{"content": "x"}]}), 400, "role"),
    (CHAT, json.dumps({"model": "m", "messages": HI, "tools": 5}), 400, "'tools'"),
    (CHAT, json.dumps({"model": "m", "messages": HI, "tools": [{"function": {"name": 3}}]}), 400, "'tools'"),
    (CHAT, json.dumps({"model": "m", "messages": "hi"}), 400, "messages"),
    (CHAT, "[1, 2]", 400, "JSON object"),
    (CHAT, b"\xff\xfe{", 400, "parse"),
    (CHAT, "[" * 100_000 + "]" * 100_000, 400, "parse"),
    (EMBED, json.dumps({"input": ["\ud800 x"]}), 200, ""),
    (EMBED, json.dumps({"input": [[1, 2, -5]]}), 400, "could not be processed"),
    (EMBED, json.dumps({"input": "x", "dimensions": 2_000_000_000}), 400, "dimensions"),
    (EMBED, json.dumps({"input": "x", "dimensions": True}), 400, "dimensions"),
    (EMBED, json.dumps({"input": {"a": 1}}), 400, "input"),
])
def test_any_request_body_gets_a_json_answer_and_the_server_keeps_serving(srv, path, body, status, needle):
    r = httpx.post(srv.base_url.removesuffix("/v1") + path, content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    if status == 400:
        assert needle in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "invalid_request_error"
    ok = sdk(srv).chat.completions.create(model="m", messages=HI)
    assert ok.choices[0].message.content


@pytest.mark.parametrize(("length", "status"), [("abc", 400), ("-5", 400), (str(2**40), 413)])
def test_a_bad_content_length_is_answered_and_the_connection_closed(srv, length, status):
    import socket

    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
        data = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode()
    assert b"Content-Length" in json.loads(body)["error"]["message"].encode()
    assert sdk(srv).chat.completions.create(model="m", messages=HI).choices


def test_fuzzed_chat_bodies_are_answered_200_or_400(srv):
    import random

    rng = random.Random(16)
    junk = [None, 0, -1, 3.5, True, "", "\ud800", [], {}, [None], [{}], {"x": 1}, "x" * 1000]
    statuses = []
    with httpx.Client(timeout=30) as http:
        for _ in range(150):
            body: dict = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                          "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                          "stream": rng.random() < 0.3}
            target = rng.choice(["model", "messages", "tools", "stream", "message", "role", "content", "function"])
            value = rng.choice(junk)
            if target in ("role", "content"):
                body["messages"][0][target] = value
            elif target == "function":
                body["tools"][0]["function"]["name"] = value
            elif target == "message":
                body["messages"].append(value)
            else:
                body[target] = value
            r = http.post(f"{srv.base_url}/chat/completions", content=json.dumps(body),
                          headers={"Content-Type": "application/json"})
            statuses.append(r.status_code)
            if r.status_code == 400:
                assert r.json()["error"]["message"]
    assert set(statuses) <= {200, 400} and statuses.count(400) > 10 and statuses.count(200) > 10
    assert srv.stats().get("status 400", 0) == statuses.count(400)


def test_a_scripted_reply_may_carry_lone_surrogates_to_test_a_client(srv):
    srv.reply("text \ud800", [("tool\ud800", {"x": "\ud800"})])
    r = sdk(srv).chat.completions.create(model="m", messages=HI)
    message = r.choices[0].message
    assert message.content == "text \ud800" and message.tool_calls[0].function.name == "tool\ud800"
    assert json.loads(message.tool_calls[0].function.arguments) == {"x": "\ud800"}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_modes_reasoning_deltas_and_calls_written_as_text(field):
    with LoopbackServer(offline="offline?calls=tagged&reasoning=field", reasoning_field=field) as s:
        chunks = list(sdk(s).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "My name is Ada."}], stream=True,
            tools=[{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {
                "label": {"type": "string"}, "content": {"type": "string"}}}}}
                   for n in ("send_message", "core_memory_append")]))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        thought = "".join(getattr(d, field, None) or "" for d in deltas)
        text = "".join(d.content or "" for d in deltas)
        assert thought.startswith("The user told me their name")
        assert text.startswith("<tool_call>") and parse_text_call(text, {"send_message"})[0] == "send_message"
        assert not any(d.tool_calls for d in deltas)  # the call is in the text, as small local models write it
        s.reply("Plain.", reasoning="Because.")  # scripted replies carry reasoning too, streamed or not
        r = sdk(s).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "Plain." and getattr(r.choices[0].message, field) == "Because."


def test_bad_chat_mode_options_are_refused_at_construction():
    with pytest.raises(InvalidArgumentError, match="reasoning_field must be one of 'reasoning_content', 'reasoning'"):
        LoopbackServer(reasoning_field="thoughts")
    with pytest.raises(InvalidArgumentError, match="'calls'"):
        LoopbackServer(offline="offline?calls=xml")
