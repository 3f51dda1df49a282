"""What the loopback server answers: OpenAI-shaped chat completions and embeddings, without HTTP.

Chat replies come from a queue of scripted replies when one is queued, else from the built-in offline
model's decision rules, so an agent on ``openai/...`` pointed at the server holds a real conversation with
tool calls; that model's modes (``offline?reply=content&calls=tagged&reasoning=field``) make it answer in
plain content, write calls as JSON text, or send reasoning deltas (``reasoning_content`` as DeepSeek and
vLLM do, or ``reasoning`` as Ollama and OpenRouter do). Embeddings are validated the way OpenAI validates
them (no empty strings, at most ``max_inputs`` inputs, ``max_input_tokens`` per input,
``max_request_tokens`` per request) and answered with ``hash`` vectors (similar texts land close) or
``digest`` vectors (cheap, a pseudo-random unit vector per distinct text, so a benchmark can check every row
came back in the right place).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybase64

from letta_nb.embeddings.hash import hash_vectors
from letta_nb.embeddings.registry import MAX_DIM
from letta_nb.embeddings.tokens import TokenCounter, estimate_tokens
from letta_nb.llm.base import Completion, ReasoningTextDelta, TextDelta, ToolCall, ToolCallDelta, Usage
from letta_nb.llm.images import content_tokens

__all__ = ["ApiError", "ScriptedReply", "REASONING_FIELDS", "digest_vectors", "check_request", "chat_completion",
           "chat_chunks", "embeddings"]

REASONING_FIELDS = ("reasoning_content", "reasoning")  # DeepSeek / vLLM, Ollama / OpenRouter


class ApiError(Exception):
    """An OpenAI-style error response: HTTP status, message, type and code."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error": {"message": self.message, "type": self.type, "param": None,
                                     "code": self.code}}).encode()


@dataclass(frozen=True)
class ScriptedReply:
    """A queued chat reply: free text and/or tool calls ``(name, arguments dict or JSON text)``, and
    reasoning sent in the provider's reasoning field."""

    content: str | None = None
    tool_calls: tuple[tuple[str, Any], ...] = ()
    reasoning: str | None = None


_PROJECTIONS: dict[int, np.ndarray] = {}


def digest_vectors(texts: Sequence[str], dim: int) -> np.ndarray:
    """A unit vector per text: the sum of four fixed random vectors picked by a CRC-32 and an Adler-32 of
    its bytes (12 bits each). Deterministic across processes, distinct texts nearly orthogonal, about a
    microsecond a text: the server's own CPU must stay small next to its simulated per-input latency."""
    table = _PROJECTIONS.get(dim)
    if table is None:
        table = _PROJECTIONS[dim] = np.random.default_rng(20240531).standard_normal((4, 4096, dim)).astype(np.float32)
    codes = [t.encode("utf-8", "surrogatepass") for t in texts]
    c = np.fromiter(map(zlib.crc32, codes), dtype=np.int64, count=len(codes))
    a = np.fromiter(map(zlib.adler32, codes), dtype=np.int64, count=len(codes))
    out: np.ndarray = (table[0][c & 4095] + table[1][(c >> 12) & 4095] + table[2][(c >> 20) & 4095]
                       + table[3][(a >> 16) & 4095])
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def check_request(path: str, request: dict[str, Any]) -> None:
    """OpenAI-shaped 400s for the shapes the handlers rely on (the rest is caught as a generic 400)."""
    if path == "/v1/embeddings":
        dims = request.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIM):
            raise ApiError(400, f"'dimensions' must be an integer from 1 to {MAX_DIM}.")
        return
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array of chat messages.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, f"'messages[{i}]' must be an object with a string 'role'.")
        content = m.get("content")
        if not (content is None or isinstance(content, str)
                or (isinstance(content, list) and all(isinstance(p, dict) for p in content))):
            raise ApiError(400, f"'messages[{i}].content' must be a string, null or an array of content parts.")
    tools = request.get("tools") or []
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
            for t in tools):
        raise ApiError(400, "'tools' must be an array of {'type': 'function', 'function': {'name': ...}} objects.")


# -- chat --------------------------------------------------------------------------------------------------


async def _offline(messages: list[dict[str, Any]], tools: list[dict[str, Any]], spec: str,
                   tool_choice: Any = None) -> Completion:
    from letta_nb.llm.offline import OfflineModel

    final = None
    async for event in OfflineModel.from_spec(spec).stream(messages, tools, tool_choice):
        final = event
    assert isinstance(final, Completion)
    return final


def chat_completion(request: dict[str, Any], scripted: ScriptedReply | None, offline: str = "offline") -> Completion:
    """The reply to a chat request: the scripted one, else what the offline model ``offline`` (a spec) says."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array of chat messages.")
    tools = request.get("tools") or []
    if scripted is None:  # the offline model honours tool_choice as a real model does
        return asyncio.run(_offline(messages, tools, offline, request.get("tool_choice") if tools else None))
    calls = tuple(  # surrogatepass: a script may name a tool with a lone surrogate, to test a client with it
        ToolCall(f"call_{hashlib.sha1(f'{len(messages)}:{i}:{n}'.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}",
                 n, a if isinstance(a, str) else json.dumps(a))
        for i, (n, a) in enumerate(scripted.tool_calls)
    )
    prompt = sum(content_tokens(m.get("content")) + 4 for m in messages)  # content parts: an image is 85
    done = (estimate_tokens(scripted.content or "") + estimate_tokens(scripted.reasoning or "")
            + sum(estimate_tokens(c.arguments) + 3 for c in calls))
    return Completion(scripted.content, calls, Usage(prompt, done), "tool_calls" if calls else "stop",
                      reasoning=scripted.reasoning)


def _usage(c: Completion) -> dict[str, int]:
    u = c.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def completion_body(c: Completion, model: str, reasoning_field: str = "reasoning_content") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.content}
    if c.reasoning:
        message[reasoning_field] = c.reasoning
    if c.tool_calls:
        message["tool_calls"] = [t.to_openai() for t in c.tool_calls]
    return {"id": f"chatcmpl-{int(time.time() * 1000)}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": c.finish_reason,
                                         "logprobs": None}], "usage": _usage(c)}


def chat_chunks(c: Completion, model: str, include_usage: bool,
                reasoning_field: str = "reasoning_content") -> Iterator[dict[str, Any]]:
    """The SSE chunks of a streamed completion: role, reasoning pieces (in ``reasoning_field``), text
    pieces, tool-call deltas, finish, usage."""
    from letta_nb.llm.offline import _deltas

    base = {"id": f"chatcmpl-{int(time.time() * 1000)}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    for ev in _deltas(c.content or "", c.tool_calls, c.reasoning or ""):
        if isinstance(ev, ReasoningTextDelta):
            yield chunk({reasoning_field: ev.text})
        elif isinstance(ev, TextDelta):
            yield chunk({"content": ev.text})
        elif isinstance(ev, ToolCallDelta):
            call: dict[str, Any] = {"index": ev.index, "function": {"arguments": ev.arguments}}
            if ev.id:
                call.update(id=ev.id, type="function")
                call["function"]["name"] = ev.name
            yield chunk({"tool_calls": [call]})
    yield chunk({}, c.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(c)}


# -- embeddings --------------------------------------------------------------------------------------------


def _base64_rows(matrix: np.ndarray) -> list[str]:
    """Each float32 row as base64; one encode of the whole buffer when rows align to 3 bytes (no padding)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    width = matrix.shape[1] * 4
    if width % 3:
        return [pybase64.b64encode_as_string(row.tobytes()) for row in matrix]
    text = pybase64.b64encode_as_string(matrix.tobytes())
    step = width // 3 * 4
    return [text[k : k + step] for k in range(0, len(text), step)]


@dataclass(frozen=True)
class EmbeddingsResult:
    body: bytes
    inputs: int
    tokens: int


def _inputs(request: dict[str, Any], counter: TokenCounter | None) -> list[str]:
    raw = request.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'input' must be a non-empty string or array of strings.")
    if all(isinstance(x, int) for x in raw):
        raw = [raw]
    if not all(type(x) is str for x in raw):
        enc = counter._enc if counter is not None else None
        raw = [(enc.decode(x) if enc is not None else " ".join(map(str, x)))  # token ids: decode when we can
               if isinstance(x, list) and all(isinstance(t, int) for t in x) else x for x in raw]
    for i, x in enumerate(raw):
        if not isinstance(x, str) or not x.strip():
            raise ApiError(400, f"'$.input[{i}]' is invalid: expected a non-empty string.")
    return raw


def embeddings(request: dict[str, Any], *, model: str, dim: int, vectors: str, max_inputs: int,
               max_input_tokens: int, max_request_tokens: int, counter: TokenCounter | None) -> EmbeddingsResult:
    texts = _inputs(request, counter)
    if len(texts) > max_inputs:
        raise ApiError(400, f"'$.input' is invalid: at most {max_inputs} inputs per request, got {len(texts)}.")
    count = counter.count if counter is not None else estimate_tokens
    tokens = [count(t) for t in texts]
    worst = max(range(len(texts)), key=tokens.__getitem__)
    if tokens[worst] > max_input_tokens:
        raise ApiError(400, f"This model's maximum context length is {max_input_tokens} tokens, however you "
                            f"requested {tokens[worst]} tokens (input {worst}). Please reduce your prompt.",
                       code="context_length_exceeded")
    total = sum(tokens)
    if total > max_request_tokens:
        raise ApiError(400, f"Requested {total} tokens, max {max_request_tokens} tokens per request.",
                       code="max_tokens_per_request")
    dims = request.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        raise ApiError(400, "'dimensions' must be a positive integer.")
    from letta_nb.embeddings.openai import NATIVE_DIMS

    dim = dims or NATIVE_DIMS.get(model, dim)  # like OpenAI: a model's native size unless asked otherwise
    matrix = digest_vectors(texts, dim) if vectors == "digest" else hash_vectors(texts, dim)
    if request.get("encoding_format") == "base64":
        rows = _base64_rows(matrix)
        parts = [f'{{"object":"embedding","index":{i},"embedding":"{row}"}}' for i, row in enumerate(rows)]
    else:
        parts = [f'{{"object":"embedding","index":{i},"embedding":{json.dumps(row)}}}'
                 for i, row in enumerate(matrix.tolist())]
    body = ('{"object":"list","data":[' + ",".join(parts) + f'],"model":{json.dumps(model)},'
            f'"usage":{{"prompt_tokens":{total},"total_tokens":{total}}}}}')
    return EmbeddingsResult(body.encode(), len(texts), total)
