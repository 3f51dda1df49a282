"""Any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, the loopback server) as an :class:`LLMClient`.

It speaks through the official ``openai`` SDK over the runtime's one shared ``httpx.AsyncClient`` (one
connection pool per kernel, proxies and CA bundle from the environment). The SDK retries 429, 5xx and
connection errors with exponential backoff and honours ``Retry-After`` / ``retry-after-ms``; once a token
has been streamed a failure is not retried (the tokens are already shown), it becomes a
:class:`~letta_nb.errors.ProviderError` carrying the status and URL.

Invariants: the API key lives only on this object and the SDK client (never in ``spec``, ``repr``, the
store or an error message); the stream yields text and tool-call deltas as they arrive and ends with one
:class:`Completion` whose ``ttft_ms`` is the time to the first delta and whose ``usage`` is the
server's count (``stream_options.include_usage``), estimated only when the server sends none. Text,
tool names and argument pieces are made valid Unicode as they arrive (a lone surrogate becomes U+FFFD),
so the deltas and the Completion agree and the turn can be stored.

Reasoning that a provider sends beside the content (``reasoning_content``: DeepSeek, vLLM;
``reasoning``: Ollama thinking models, OpenRouter, newer vLLM) becomes :class:`ReasoningTextDelta`
events and ``Completion.reasoning``, never content: the reply stays the reply.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import httpx

from letta_nb._http import WITHHELD_KEY, SdkClient, error_message
from letta_nb._text import clean_text
from letta_nb.errors import ProviderError
from letta_nb.llm.base import (
    Completion,
    LLMEvent,
    ReasoningTextDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
)
from letta_nb.llm.images import images_after_tools
from letta_nb.llm.tokens import estimate_tokens, message_tokens

__all__ = ["OpenAICompatModel", "reasoning_text"]

_REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_text(part: Any) -> str:
    """The reasoning a streamed delta or a whole message carries in a provider field, else ``""``.

    The SDK keeps fields it does not know as attributes (pydantic extras); a dict works too. The first
    non-empty field wins: a server sending both names sends the same text twice."""
    for key in _REASONING_FIELDS:
        value = part.get(key) if isinstance(part, dict) else getattr(part, key, None)
        if isinstance(value, str) and value:
            return clean_text(value)
    return ""


class OpenAICompatModel:
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    supports_parallel_tool_calls: ClassVar[bool] = True

    def __init__(self, *, provider: str, model: str, base_url: str, api_key: str, spec: str,
                 http: Callable[[], httpx.AsyncClient] | None = None, context_window: int = 128_000,
                 max_retries: int = 3, timeout: float = 120.0, temperature: float | None = None):
        self.provider, self.model, self.base_url = provider, model, base_url.rstrip("/")
        self.name = f"{provider}/{model}"
        self.spec = spec  # what the agent stores: never holds the key
        self.context_window = context_window
        self.max_retries, self.timeout, self.temperature = max_retries, timeout, temperature
        self._sdk = SdkClient(self.base_url, api_key, http, max_retries=max_retries, timeout=timeout)
        self._key_withheld = api_key == WITHHELD_KEY  # see llm.registry.endpoint

    def __repr__(self) -> str:
        return f"OpenAICompatModel({self.spec!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this model made itself (the runtime's shared one is closed by the runtime)."""
        await self._sdk.aclose()

    def _error(self, e: Exception) -> ProviderError:
        import openai

        where = f"model {self.name!r} at {self.base_url}"
        if isinstance(e, openai.APIStatusError):
            key_hint = (" No API key was sent: this agent's model settings were not written by you (a shared or "
                        "edited store), and keys go only to endpoints you configured. If you trust this endpoint, "
                        "set the model yourself: client.agents.update(agent, model=...)."
                        if self._key_withheld else " Check the API key (OPENAI_API_KEY) for this endpoint.")
            hints = {401: key_hint,
                     404: " Check the model name and base_url.",
                     429: " The endpoint is rate limiting; retries were exhausted. Try again later."}
            hint = hints.get(e.status_code, "")
            return ProviderError(f"{where} answered HTTP {e.status_code}: {error_message(e)}.{hint}",
                                 status=e.status_code)
        if isinstance(e, openai.APITimeoutError):
            return ProviderError(f"{where} timed out after {self.timeout:g} s (after {self.max_retries} retries).")
        if isinstance(e, openai.APIConnectionError):
            return ProviderError(f"cannot reach {where}: {e.__cause__ or e}. Is the server running?")
        return ProviderError(f"{where} sent a reply letta_nb could not read ({type(e).__name__}: {e}).")

    def request_body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                     tool_choice: ToolChoice = None) -> dict[str, Any]:
        """The ``/chat/completions`` body :meth:`stream` sends (``messages.preview`` shows it unsent)."""
        # Image parts go in user messages only: a tool's image (the figure tool) moves after its result.
        body: dict[str, Any] = {"model": self.model, "messages": images_after_tools(messages), "stream": True,
                                "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:  # sent only when tool rules demand a call: "auto" is every API's default
                body["tool_choice"] = tool_choice
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                     tool_choice: ToolChoice = None) -> AsyncIterator[LLMEvent]:
        import openai

        kwargs = self.request_body(messages, tools, tool_choice)
        start = time.perf_counter()
        ttft_ms: float | None = None
        text: list[str] = []
        thoughts: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        usage: Usage | None = None
        finish = "stop"
        try:
            stream = await self._sdk.get().chat.completions.create(**kwargs)
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        if delta is None:
                            continue
                        thought = reasoning_text(delta)
                        if thought:
                            ttft_ms = ttft_ms if ttft_ms is not None else (time.perf_counter() - start) * 1000
                            thoughts.append(thought)
                            yield ReasoningTextDelta(thought)
                        if delta.content:
                            ttft_ms = ttft_ms if ttft_ms is not None else (time.perf_counter() - start) * 1000
                            words = clean_text(delta.content)  # a JSON \ud800 escape in the SSE chunk
                            text.append(words)
                            yield TextDelta(words)
                        for tc in delta.tool_calls or ():
                            ttft_ms = ttft_ms if ttft_ms is not None else (time.perf_counter() - start) * 1000
                            fn = tc.function
                            slot = calls.setdefault(tc.index, ["", "", ""])
                            call_id = clean_text(tc.id) if tc.id else ""
                            new_id = call_id if call_id and not slot[0] else None
                            new_name = clean_text(fn.name) if fn is not None and fn.name and not slot[1] else None
                            piece = clean_text(fn.arguments or "") if fn is not None else ""
                            slot[0] = slot[0] or call_id
                            slot[1] = slot[1] or (new_name or "")
                            slot[2] += piece
                            if new_id or new_name or piece:
                                yield ToolCallDelta(tc.index, new_id, new_name, piece)
        except (openai.OpenAIError, ValueError) as e:
            raise self._error(e) from None
        tool_calls = tuple(ToolCall(c[0] or f"call_{i}", c[1], c[2] or "{}") for i, c in sorted(calls.items()))
        content = "".join(text) or None
        if usage is None:  # the server sent no usage: estimate, as the context budget does
            usage = Usage(sum(message_tokens(m) for m in messages),
                          estimate_tokens(content) + sum(estimate_tokens(c.arguments) + 3 for c in tool_calls))
        if tool_calls and finish == "stop":
            finish = "tool_calls"
        yield Completion(content, tool_calls, usage, finish,
                         ttft_ms if ttft_ms is not None else (time.perf_counter() - start) * 1000,
                         "".join(thoughts) or None)


