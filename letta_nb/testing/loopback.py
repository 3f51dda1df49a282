"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, benchmarks and notebooks (no key, no network).

``with LoopbackServer(latency=Latency(base_ms=40, per_input_ms=0.05), limits=Limits(max_concurrent=8),
faults=Faults(error_rate=0.02)) as srv:`` serves ``srv.base_url`` (``http://127.0.0.1:PORT/v1``) from a
daemon thread: ``/v1/chat/completions`` (JSON or SSE with tool-call deltas and usage), ``/v1/embeddings``
(float or base64) and ``/v1/models``. It behaves like a rate-limited provider: past ``max_concurrent``
requests in flight it answers 429 with ``Retry-After``; bad input gets OpenAI-shaped 400s; ``inject()``
queues faults (``"429"``, ``"500"``, ``"503"``, ``"malformed"``, ``"short"``, ``"timeout"``,
``"disconnect"``) for the next requests to a path, and ``Faults.error_rate`` answers a seeded random share
of requests with 5xx. ``reply()`` queues scripted chat replies (content, tool calls, reasoning); with none
queued it runs the offline model's rules, answering the way ``offline=`` says (``"offline?reply=content"``:
plain content; ``calls=json|fenced|tagged``: a call written as JSON text; ``reasoning=field``: reasoning
deltas in ``reasoning_field``, ``"reasoning_content"`` or ``"reasoning"``). ``stats()`` counts what happened
(the bench checks ideal vs achieved from it). ``requests`` keeps a row per request (path, status, ms, and for
chat the names of the ``tools`` offered, the ``tool_choice`` sent and the whole parsed ``body``).
A request to summarise a conversation (runtime/compaction.py's shape) is a summarisation request: the
offline model's summariser answers it (scripted replies are kept for the agent's own steps), and its faults
come from ``inject(..., path=SUMMARY)`` only, so a test can fail the summariser and nothing else.

Invariants: the in-flight count is released *before* the response is written, so a client that sends its
next request the moment it reads a reply is never throttled by a request that already finished; simulated
waits end early when the server closes, so ``close()`` never hangs on a sleeping handler.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from letta_nb._text import clean_json, clean_text
from letta_nb.embeddings.tokens import TokenCounter
from letta_nb.errors import InvalidArgumentError
from letta_nb.llm._offline_summary import is_summary_request
from letta_nb.testing import _api
from letta_nb.testing._api import REASONING_FIELDS, ApiError, ScriptedReply

__all__ = ["LoopbackServer", "Latency", "Limits", "Faults", "ScriptedReply", "FAULT_KINDS", "SUMMARY"]

SUMMARY = "summary"  # the fault queue of summarisation requests (``inject("500", path=SUMMARY)``)

FAULT_KINDS = ("429", "500", "502", "503", "malformed", "short", "timeout", "disconnect")
MAX_BODY_BYTES = 256 * 1024 * 1024  # far past any real request (2048 inputs x 8191 tokens is ~70 MB of text)


@dataclasses.dataclass(frozen=True)
class Latency:
    """Simulated service time: ``base_ms`` per request (before the first token for chat), plus
    ``per_input_ms`` per embedding input; chat streams at ``tps`` tokens a second when set."""

    base_ms: float = 0.0
    per_input_ms: float = 0.0
    tps: float | None = None

    def embed_ms(self, inputs: int) -> float:
        return self.base_ms + self.per_input_ms * inputs


@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits like OpenAI's embeddings endpoint. ``tokenizer`` is ``"exact"`` (cl100k when
    available) or ``"estimate"`` (ceil(bytes/4), cheap: benchmarks use it so the server's own CPU stays out
    of the measurement)."""

    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    max_input_tokens: int = 8191
    max_concurrent: int = 64
    retry_after_s: float = 0.05
    tokenizer: str = "exact"


@dataclasses.dataclass(frozen=True)
class Faults:
    """``error_rate``: share of API requests answered 5xx (seeded, after ``base_ms``); ``hang_s``: how long
    an injected ``timeout`` stalls before the connection is dropped."""

    error_rate: float = 0.0
    seed: int = 0
    hang_s: float = 5.0


class LoopbackServer:
    def __init__(self, *, latency: Latency | None = None, limits: Limits | None = None, faults: Faults | None = None,
                 vectors: str = "hash", dim: int = 384, api_key: str | None = None,
                 models: tuple[str, ...] = ("loopback-chat", "text-embedding-3-small"), port: int = 0,
                 offline: str = "offline", reasoning_field: str = "reasoning_content"):
        if vectors not in ("hash", "digest"):
            raise InvalidArgumentError(f"vectors must be 'hash' or 'digest', got {vectors!r}")
        if reasoning_field not in REASONING_FIELDS:
            raise InvalidArgumentError(f"reasoning_field must be one of {', '.join(map(repr, REASONING_FIELDS))}, "
                                       f"got {reasoning_field!r}")
        from letta_nb.llm.offline import OfflineModel

        self.offline = OfflineModel.from_spec(offline).spec  # checked now, not at the first request
        self.reasoning_field = reasoning_field
        self.latency, self.limits, self.faults = latency or Latency(), limits or Limits(), faults or Faults()
        if self.limits.tokenizer not in ("exact", "estimate"):
            raise InvalidArgumentError(f"Limits.tokenizer must be 'exact' or 'estimate', got {self.limits.tokenizer!r}")
        self.vectors, self.dim, self.models = vectors, dim, models
        self._api_key = api_key
        self._counter = TokenCounter() if self.limits.tokenizer == "exact" else None
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._in_flight = 0
        self._injected: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._replies: collections.deque[ScriptedReply] = collections.deque()
        self._stats: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self._httpd = _QuietServer(("127.0.0.1", port), _Handler, bind_and_activate=False)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 256
        self._httpd.allow_reuse_address = True
        self._httpd.server_bind()
        self._httpd.server_activate()
        self._httpd.loopback = self
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LoopbackServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"loopback-{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LoopbackServer({self.base_url!r}, latency={self.latency}, limits={self.limits})"

    # ---- scripting ------------------------------------------------------------------------------------
    def inject(self, *kinds: str, path: str = "/v1/embeddings") -> None:
        """Queue faults for the next requests to ``path`` (one fault per request, in order); ``path=SUMMARY``:
        for the next summarisation requests only."""
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise InvalidArgumentError(f"unknown fault {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._injected[path].extend(kinds)

    def reply(self, content: str | None = None, tool_calls: tuple[tuple[str, Any], ...] | list[Any] = (),
              reasoning: str | None = None) -> None:
        """Queue a scripted chat reply (used before the offline rules); ``reasoning`` goes in the reasoning field."""
        with self._lock:
            self._replies.append(ScriptedReply(content, tuple(tool_calls), reasoning))

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)

    # ---- used by the handler --------------------------------------------------------------------------
    def admit(self, path: str, faults: str | None = None) -> tuple[str | None, bool]:
        """Count the request in: (fault to apply, whether it holds an in-flight slot). Over the concurrency
        limit the fault is ``"429"`` and no slot is taken. Injected faults come from the queue of ``faults``
        (default: ``path``)."""
        with self._lock:
            self._stats[f"requests {path}"] += 1
            if self._in_flight >= self.limits.max_concurrent:
                self._stats["throttled"] += 1
                return "429", False
            self._in_flight += 1
            self._stats["max_in_flight"] = max(self._stats["max_in_flight"], self._in_flight)
            queue = self._injected.get(faults or path)
            if queue:
                self._stats["injected"] += 1
                return queue.popleft(), True
            if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
                self._stats["random_5xx"] += 1
                return self._rng.choice(("500", "502", "503")), True
            return None, True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def next_reply(self) -> ScriptedReply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def record(self, **row: Any) -> None:
        with self._lock:
            self.requests.append(row)
            self._stats[f"status {row['status']}"] += 1
            if row.get("inputs") and row["status"] == 200:
                self._stats["inputs_embedded"] += row["inputs"]

    def check_key(self, header: str | None) -> None:
        if self._api_key is not None and header != f"Bearer {self._api_key}":
            raise ApiError(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


class _QuietServer(ThreadingHTTPServer):
    loopback: LoopbackServer  # the server whose requests the handlers answer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-response (a cancelled stream, a timeout test) is not an error here


class _Handler(BaseHTTPRequestHandler):
    server: _QuietServer
    protocol_version = "HTTP/1.1"
    server_version = "letta-nb-loopback/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    @property
    def lb(self) -> LoopbackServer:
        return self.server.loopback

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "letta_nb"} for m in self.lb.models]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        elif self.path == "/_loopback/stats":
            self._send(200, json.dumps(self.lb.stats()).encode())
        else:
            self._send(404, ApiError(404, f"no route GET {self.path}", "not_found").body())

    def send_response(self, code: int, message: str | None = None) -> None:
        self._responded = True  # from here on an error can only drop the connection, not become a 400
        super().send_response(code, message)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            # The body cannot be read (or skipped) safely: answer and close the connection.
            self.close_connection = True
            status = 413 if length.isdigit() else 400
            message = f"Content-Length must be a byte count of at most {MAX_BODY_BYTES}."
            self._send(status, ApiError(status, message).body(), {"Connection": "close"})
            return
        raw = self.rfile.read(int(length))
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            self._send(404, ApiError(404, f"no route POST {self.path}", "not_found").body())
            return
        started = time.perf_counter()
        self._summary = path == "/v1/chat/completions" and _is_summary(raw)
        fault, self._held = self.lb.admit(path, SUMMARY if self._summary else None)
        if fault == "429":
            self._release()
            retry = self.lb.limits.retry_after_s
            self.lb.record(path=path, status=429, inputs=0)
            self._send(429, ApiError(429, "Rate limit reached: too many concurrent requests.", "rate_limit_exceeded",
                                     "rate_limit_exceeded").body(),
                       {"retry-after-ms": str(int(retry * 1000)), "Retry-After": f"{retry:g}"})
            return
        self._path, self._started = path, started
        self._seen: dict[str, Any] = {}  # what a chat request asked for, recorded with it (see _finish)
        try:
            self._serve(path, raw, fault, started)
        finally:
            self._release()

    def _finish(self, status: int, inputs: int) -> None:
        """Release the slot and record the request, just before its last bytes go out (so a client that
        reads the reply always finds it in ``requests``)."""
        self._release()
        self.lb.record(path=self._path, status=status, inputs=inputs, ms=(time.perf_counter() - self._started) * 1000,
                       **self._seen)

    def _release(self) -> None:
        if getattr(self, "_held", False):
            self._held = False
            self.lb.release()

    def _serve(self, path: str, raw: bytes, fault: str | None, started: float) -> None:
        """Answer one admitted request; releases the in-flight slot before writing the response.

        Any body gets an answer: what the server cannot process is a 400 in OpenAI's error shape, never
        a dropped connection (only a failure after the response started can end it)."""
        lb = self.lb
        self._responded = False
        try:
            lb.check_key(self.headers.get("Authorization"))
            request = _parse_body(raw)
            if fault not in ("timeout", "disconnect", "500", "502", "503"):
                _api.check_request(path, request)
            if fault in ("timeout", "disconnect"):
                lb.sleep(lb.faults.hang_s if fault == "timeout" else 0)
                self._finish(0, 0)
                self.close_connection = True
                self.connection.close()
                return
            if fault in ("500", "502", "503"):
                lb.sleep(lb.latency.base_ms / 1000)
                raise ApiError(int(fault), "The server had an error while processing your request.", "server_error")
            if path == "/v1/embeddings":
                self._embeddings(request, fault, started)
            else:
                self._chat(request, fault, started)
        except ApiError as e:
            self._finish(e.status, 0)
            self._send(e.status, e.body(), e.headers)
        except Exception as e:
            if self._responded or isinstance(e, OSError):
                raise  # the client hung up mid-response: nothing more to say (handle_error stays quiet)
            error = ApiError(400, f"The request could not be processed ({type(e).__name__}: "
                                  f"{clean_text(str(e))[:200]}); check it against the OpenAI API reference.")
            self._finish(400, 0)
            self._send(400, error.body())

    def _embeddings(self, request: dict[str, Any], fault: str | None, started: float) -> None:
        lb = self.lb
        lim = lb.limits
        result = _api.embeddings(request, model=str(request.get("model") or "text-embedding-3-small"), dim=lb.dim,
                                 vectors=lb.vectors, max_inputs=lim.max_inputs, max_input_tokens=lim.max_input_tokens,
                                 max_request_tokens=lim.max_request_tokens, counter=lb._counter)
        body = result.body
        if fault == "malformed":
            body = body[: len(body) // 2]
        elif fault == "short":  # a well-formed reply with one embedding missing
            data = json.loads(body)
            data["data"] = data["data"][:-1]
            body = json.dumps(data).encode()
        lb.sleep(lb.latency.embed_ms(result.inputs) / 1000 - (time.perf_counter() - started))
        self._finish(200, result.inputs)
        self._send(200, body)

    def _chat(self, request: dict[str, Any], fault: str | None, started: float) -> None:
        lb = self.lb
        model = str(request.get("model") or "loopback-chat")
        tools = request.get("tools") or []
        self._seen = {"tools": [t["function"]["name"] for t in tools], "tool_choice": request.get("tool_choice"),
                      "body": request}  # the request as received (tests compare it with messages.preview)
        completion = _api.chat_completion(request, None if self._summary else lb.next_reply(), lb.offline)
        lb.sleep(lb.latency.base_ms / 1000 - (time.perf_counter() - started))
        if not request.get("stream"):
            body = json.dumps(_api.completion_body(completion, model, lb.reasoning_field)).encode()
            self._finish(200, 0)
            self._send(200, body[: len(body) // 2] if fault == "malformed" else body)
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        per_chunk = 1 / lb.latency.tps if lb.latency.tps else 0.0
        try:
            for chunk in _api.chat_chunks(completion, model, include_usage, lb.reasoning_field):
                self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                if per_chunk:
                    lb.sleep(per_chunk)
            if fault == "malformed":
                self._chunk(b"data: {not json\n\n")
            self._chunk(b"data: [DONE]\n\n")
        finally:
            self._finish(200, 0)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _is_summary(raw: bytes) -> bool:
    """Whether a chat request body asks for a conversation summary (parsed only when its tag is there)."""
    if b"<evicted_messages>" not in raw:
        return False
    try:
        messages = _parse_body(raw).get("messages")
    except ApiError:
        return False
    return isinstance(messages, list) and all(isinstance(m, dict) for m in messages) and \
        is_summary_request(messages)


def _parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, its strings valid Unicode. orjson is fast (megabytes of
    embedding inputs) but refuses a lone-surrogate escape (``\\ud800``), which is valid JSON: the stdlib
    parser reads those, and the surrogates become U+FFFD as anywhere else text enters letta_nb."""
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            request = clean_json(json.loads(raw))
        except (ValueError, RecursionError):
            raise ApiError(400, f"We could not parse the JSON body of your request ({e}).") from None
    if not isinstance(request, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return request


def ideal_embed_seconds(inputs: int, tokens: int, latency: Latency, limits: Limits) -> float:
    """The server's busy time for the fewest requests that fit its limits, over its concurrency."""
    requests = max(math.ceil(inputs / limits.max_inputs), math.ceil(tokens / limits.max_request_tokens), 1)
    return (requests * latency.base_ms + inputs * latency.per_input_ms) / 1000 / limits.max_concurrent
