"""The production embedder: any OpenAI-compatible ``/embeddings`` endpoint, batched, bounded and resilient.

A call plans batches (:mod:`letta_nb.embeddings.batching`: empties dropped, oversized inputs split or
truncated by tokens, batches within the endpoint's input and token limits, balanced over the concurrency)
and sends them through the official ``openai`` SDK (its own retries off: this module decides) over the
runtime's shared ``httpx.AsyncClient``, at most ``limit`` requests at a time
(:mod:`letta_nb.embeddings.concurrency`). Per response:

- 429: wait ``retry-after-ms`` / ``Retry-After`` (without holding a slot), tell the limit, resend;
- token-limit 400 (or any 400 on a batch of more than one input): split the batch in half and send both
  halves, so one bad input costs log2(batch) requests and fails alone; a single input over the per-input
  limit is split by tokens and embedded as the mean of its pieces (Letta resends it ~11 times and drops it);
- 5xx, timeouts, dropped connections, malformed or short bodies: exponential backoff with jitter, then a
  per-chunk failure naming the cause.

Invariants: each non-empty input ends with exactly one vector (in input order) or one entry in
``EmbedReport.failed``; vectors are float32 and L2-normalised; the key never appears in ``repr``, errors or
telemetry. Each HTTP attempt is reported to ``on_batch`` as a :class:`BatchRecord`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import orjson
import pybase64

from letta_nb._http import SdkClient, error_message
from letta_nb.embeddings.base import (
    BatchRecord,
    EmbedderStats,
    EmbedReport,
    check_texts,
    check_types,
)
from letta_nb.embeddings.batching import SAFETY, Batch, Pieces, pack, plan_batches, split_deferred
from letta_nb.embeddings.concurrency import ConcurrencyLimit, limit_for
from letta_nb.embeddings.tokens import TokenCounter

__all__ = ["NATIVE_DIMS", "OpenAIEmbedder"]

NATIVE_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_TOKEN_WORDS = ("maximum context length", "tokens per request", "too many tokens", "context_length_exceeded",
                "maximum input length", "max_tokens_per_request")


class _Attempt(Exception):
    """One failed HTTP attempt, classified: ``kind`` is throttle | split | retry | fatal."""

    def __init__(self, kind: str, reason: str, status: int | None = None, wait: float | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.status, self.wait = kind, reason, status, wait


class OpenAIEmbedder:
    def __init__(self, model: str = "text-embedding-3-small", *, base_url: str, api_key: str,
                 http: Callable[[], httpx.AsyncClient] | None = None, dimensions: int | None = None,
                 max_inputs: int = 2048, max_request_tokens: int = 300_000, max_input_tokens: int = 8191,
                 concurrency: int | None = None, adaptive: bool | None = None, limit: ConcurrencyLimit | None = None,
                 max_retries: int = 4, backoff_s: float = 0.1, timeout: float = 60.0, oversize: str = "split",
                 name: str | None = None, on_batch: Callable[[BatchRecord], None] | None = None):
        if oversize not in ("split", "truncate"):
            raise ValueError(f"oversize must be 'split' or 'truncate', got {oversize!r}")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.name = name or f"openai/{model}"
        self.dimensions = dimensions
        self.dim = dimensions or NATIVE_DIMS.get(model, 0)  # 0: learned from the first response
        self.max_inputs, self.max_request_tokens = max_inputs, max_request_tokens
        self.max_input_tokens = max_input_tokens
        self.max_retries, self.backoff_s, self.timeout, self.oversize = max_retries, backoff_s, timeout, oversize
        self.on_batch = on_batch
        self.stats = EmbedderStats()
        self.counter = TokenCounter("cl100k_base")
        self._concurrency, self._adaptive, self._limit = concurrency, adaptive, limit
        self._sdk = SdkClient(self.base_url, api_key, http, max_retries=0, timeout=timeout)  # retries are ours

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.name!r}, base_url={self.base_url!r}, dim={self.dim})"

    @property
    def limit(self) -> ConcurrencyLimit:
        if self._limit is None:
            self._limit = limit_for(self.base_url, self._concurrency, self._adaptive)
        return self._limit

    async def aclose(self) -> None:
        await self._sdk.aclose()

    # ---- the protocol ---------------------------------------------------------------------------------
    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        check_texts(texts)
        return (await self.embed_report(texts)).raise_for_failures()

    async def embed_report(self, texts: Sequence[str]) -> EmbedReport:
        check_types(texts)  # the plan finds the blank ones
        plan = plan_batches(texts, self.counter, max_inputs=self.max_inputs,
                            max_request_tokens=self.max_request_tokens, max_input_tokens=self.max_input_tokens,
                            concurrency=self.limit.limit, oversize=self.oversize, defer_oversized=True)
        main = _Part(plan.pieces)
        late = _Part(Pieces.of([], [], []))

        async def oversized() -> None:
            # Inputs that may be over the per-input limit are tokenised in a thread while the rest is sent.
            pieces, plan.truncated, plan.split = await asyncio.to_thread(
                split_deferred, texts, plan.deferred, self.counter, self.max_input_tokens, self.oversize)
            late.reset(pieces)
            budget = max(1, int(self.max_request_tokens * SAFETY))
            await asyncio.gather(*(self._run(late, b, 0) for b in pack(pieces.tokens, self.max_inputs, budget)))

        jobs = [self._run(main, b, 0) for b in plan.batches]
        await asyncio.gather(*jobs, *([oversized()] if plan.deferred else []))
        self.stats.oversized += len(plan.truncated) + len(plan.split)
        return self._assemble(len(texts), plan, main, late)

    async def _run(self, part: _Part, batch: Batch, splits: int) -> None:
        """Send pieces ``start:stop`` of ``part``; halve on a token-limit error; record failures per piece."""
        start, stop = batch
        pieces = part.pieces
        try:
            rows = await self._send(pieces.texts[start:stop], int(pieces.tokens[start:stop].sum()), splits)
        except _Attempt as e:
            if e.kind == "split" and stop - start > 1:
                self.stats.splits += 1
                half = (start + stop) // 2
                await asyncio.gather(self._run(part, (start, half), splits + 1),
                                     self._run(part, (half, stop), splits + 1))
            elif e.kind == "split" and (parts := self._halve(pieces.texts[start])):
                # one input the server still finds too long: halve it by tokens (recursively), mean of the parts
                try:
                    part.put(start, (await self._halves(parts, splits + 1))[None, :])
                    part.split_late.add(int(pieces.owners[start]))
                    self.stats.oversized += 1
                except _Attempt as bad:
                    part.failed[start] = bad.reason
            else:
                part.failed.update(dict.fromkeys(range(start, stop), e.reason))
            return
        part.put(start, rows)

    async def _halves(self, parts: list[str], splits: int) -> np.ndarray:
        async def one(text: str) -> np.ndarray:
            try:
                row: np.ndarray = (await self._send([text], self.counter.estimate(text), splits))[0]
                return row
            except _Attempt as e:
                if e.kind != "split" or splits >= 8 or not (sub := self._halve(text)):
                    raise
                return await self._halves(sub, splits + 1)

        rows = await asyncio.gather(*(one(p) for p in parts))
        return _mean(np.stack(rows), [self.counter.estimate(p) for p in parts])

    def _halve(self, text: str) -> list[str] | None:
        n = self.counter.count(text)
        return self.counter.split(text, max(1, (n + 1) // 2)) if n > 1 else None

    def _assemble(self, total: int, plan: Any, main: _Part, late: _Part) -> EmbedReport:
        """One row per input, in input order: its piece's row, or the token-weighted mean of its pieces."""
        pieces = main.pieces + late.pieces
        failed = {**main.failed, **{k + len(main.pieces): v for k, v in late.failed.items()}}
        matrices = [p.matrix for p in (main, late) if p.matrix is not None]
        dim = self.dim or (matrices[0].shape[1] if matrices else 0)
        if not len(pieces) or not matrices:
            reasons: dict[int, str] = {int(owner): failed.get(i, "no vector returned")
                                       for i, owner in enumerate(pieces.owners)}
            self.stats.failed_chunks += len(reasons)
            return EmbedReport(total, dim, np.zeros((0, dim), np.float32), [], empty=plan.empty, failed=reasons,
                               truncated=plan.truncated, split=plan.split)
        # The common case (no late part, one piece an input, all in) must not copy a 30 MB matrix four times.
        if len(late.pieces):
            matrix = np.concatenate([p.matrix if p.matrix is not None else np.zeros((len(p.pieces), dim), np.float32)
                                     for p in (main, late)])
            have = np.concatenate([main.have, late.have])
        else:
            assert main.matrix is not None  # in `matrices`, and the late part has no pieces to have a matrix
            matrix, have = main.matrix, main.have
        owner_of = pieces.owners
        starts = np.flatnonzero(np.r_[True, owner_of[1:] != owner_of[:-1]])
        counts = np.diff(np.r_[starts, len(pieces)])
        ok = np.logical_and.reduceat(have, starts)
        rows = matrix if len(starts) == len(pieces) else matrix[starts]
        for k in np.flatnonzero((counts > 1) & ok):
            first, last = starts[k], starts[k] + counts[k]
            rows[k] = _mean(matrix[first:last], np.maximum(pieces.tokens[first:last], 1))
        reasons = {}
        for k in np.flatnonzero(~ok):
            ids = range(starts[k], starts[k] + counts[k])
            reasons[int(owner_of[starts[k]])] = next((failed[i] for i in ids if i in failed), "no vector returned")
        self.stats.failed_chunks += len(reasons)
        all_ok = bool(ok.all())
        owners = owner_of[starts] if all_ok else owner_of[starts[ok]]
        kept = rows if all_ok else rows[ok]
        if owners.size and np.any(owners[1:] < owners[:-1]):  # deferred (oversized) inputs were sent last
            order = np.argsort(owners, kind="stable")
            kept, owners = kept[order], owners[order]
        return EmbedReport(total, dim, kept, owners.tolist(), empty=plan.empty, failed=reasons,
                           truncated=sorted(plan.truncated),
                           split=sorted(set(plan.split) | main.split_late | late.split_late))

    # ---- one batch, with retries ----------------------------------------------------------------------
    async def _send(self, inputs: list[str], tokens: int, splits: int) -> np.ndarray:
        retries = 0
        throttles = 0
        while True:
            await self.limit.acquire()
            held = True
            started, t0 = time.time(), time.perf_counter()
            status: int | None = None
            try:
                response = await self._post(inputs)
                # The server is done with this request: free the slot so a waiting batch is sent while this
                # reply is decoded (a few ms a reply, at every wave of replies).
                self.limit.release()
                held = False
                await asyncio.sleep(0)
                rows = self._rows(response, len(inputs))
                status = 200
                self.limit.on_success()
                self._record(started, t0, len(inputs), tokens, "ok", retries, splits, 200)
                return rows
            except _Attempt as e:
                status = e.status
                self._record(started, t0, len(inputs), tokens, "error", retries, splits, status)
                if e.kind == "throttle":
                    self.stats.throttled += 1
                    self.limit.on_throttle()
                    if held:
                        self.limit.release()
                        held = False
                    throttles += 1
                    if throttles > 50:
                        raise _Attempt("fatal", f"HTTP 429 rate limited {throttles} times in a row", 429) from None
                    await asyncio.sleep(e.wait if e.wait is not None else self._backoff(throttles))
                    continue
                if e.kind in ("split", "fatal") or retries >= self.max_retries:
                    if e.kind == "retry":
                        raise _Attempt("fatal", f"{e.reason} (gave up after {retries + 1} attempts)", status) from None
                    raise
                if held:
                    self.limit.release()
                    held = False
                retries += 1
                self.stats.retries += 1
                await asyncio.sleep(e.wait if e.wait is not None else self._backoff(retries))
            finally:
                if held:
                    self.limit.release()

    def _backoff(self, attempt: int) -> float:
        return min(4.0, self.backoff_s * 2.0 ** (attempt - 1)) * (0.5 + random.random())

    def _record(self, started: float, t0: float, inputs: int, tokens: int, status: str, retries: int, splits: int,
                http_status: int | None) -> None:
        ms = (time.perf_counter() - t0) * 1000
        st = self.stats
        st.requests += 1
        st.request_ms += ms
        if status == "ok":
            st.inputs += inputs
            st.tokens += tokens
        else:
            st.errors += 1
        if self.on_batch is not None:
            self.on_batch(BatchRecord(started, inputs, tokens, ms, status, retries, splits, http_status, self.name))

    async def _post(self, inputs: list[str]) -> httpx.Response:
        import openai

        payload: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "base64"}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        try:
            # The SDK's low-level post: its auth, URL, headers and error types, without building a pydantic
            # object per vector (that costs more CPU than the server's per-input time).
            response = await self._sdk.post_json("/embeddings", payload)
        except openai.RateLimitError as e:
            raise _Attempt("throttle", f"HTTP 429: {error_message(e)}", 429, _retry_after(e.response.headers)) from None
        except openai.APIStatusError as e:
            code = e.status_code
            msg = error_message(e)
            if code == 400 and (len(inputs) > 1 or any(w in msg.lower() for w in _TOKEN_WORDS)):
                raise _Attempt("split", f"HTTP 400: {msg}", 400) from None
            if code in (408, 409) or code >= 500:
                raise _Attempt("retry", f"HTTP {code}: {msg}", code, _retry_after(e.response.headers)) from None
            raise _Attempt("fatal", f"HTTP {code}: {msg}", code) from None
        except openai.APITimeoutError:
            raise _Attempt("retry", f"timed out after {self.timeout:g} s") from None
        except openai.APIConnectionError as e:
            raise _Attempt("retry", f"connection failed ({e.__cause__ or e})") from None
        except (openai.APIResponseValidationError, ValueError) as e:
            raise _Attempt("retry", f"malformed response ({type(e).__name__})", 200) from None
        return response

    def _rows(self, response: httpx.Response, n: int) -> np.ndarray:
        """The response's vectors as an (n, dim) matrix. orjson and pybase64 (SIMD): with the stdlib's json and
        base64 a 900-vector response took ~7 ms to decode, more than the rest of a request's client work."""
        try:
            data = sorted(orjson.loads(response.content)["data"], key=lambda d: d["index"])
        except (ValueError, KeyError, TypeError) as e:
            raise _Attempt("retry", f"malformed response body ({type(e).__name__}: {e})",
                           response.status_code) from None
        if len(data) != n or [d["index"] for d in data] != list(range(n)):
            raise _Attempt("retry", f"malformed response: {len(data)} embeddings for {n} inputs", 200)
        try:
            rows = [d["embedding"] for d in data]
            matrix = _one_decode(rows, n)
            if matrix is None:
                parts = [pybase64.b64decode(r, validate=True) if isinstance(r, str)
                         else np.asarray(r, dtype=np.float32).tobytes() for r in rows]
                if len(set(map(len, parts))) != 1:
                    raise ValueError("embeddings of different lengths in one response")
                matrix = np.frombuffer(b"".join(parts), dtype=np.float32).reshape(n, -1)
        except (ValueError, TypeError, KeyError) as e:
            raise _Attempt("retry", f"malformed response: embeddings not decodable ({e})", 200) from None
        if self.dim and matrix.shape[1] != self.dim:
            raise _Attempt("fatal", f"endpoint returned {matrix.shape[1]}-dim vectors, expected {self.dim}; set "
                                    f"?dimensions={matrix.shape[1]} or use the matching model", 200)
        self.dim = matrix.shape[1]
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
            raise _Attempt("retry", "malformed response: zero or non-finite vectors", 200)
        unit: np.ndarray = matrix / norms
        return unit


class _Part:
    """Pieces and their vectors as they arrive: one matrix, allocated when the first batch says the dimension."""

    def __init__(self, pieces: Pieces):
        self.reset(pieces)

    def reset(self, pieces: Pieces) -> None:
        self.pieces = pieces
        self.matrix: np.ndarray | None = None
        self.have = np.zeros(len(pieces), dtype=bool)
        self.failed: dict[int, str] = {}  # piece id -> reason
        self.split_late: set[int] = set()  # inputs the server found too long, split after its 400

    def put(self, first: int, rows: np.ndarray) -> None:
        if self.matrix is None:  # rows nobody put stay unread: ``have`` says which are real
            self.matrix = np.empty((len(self.have), rows.shape[1]), dtype=np.float32)
        self.matrix[first : first + len(rows)] = rows
        self.have[first : first + len(rows)] = True


def _one_decode(rows: list[Any], n: int) -> np.ndarray | None:
    """Base64 rows of equal, unpadded length (384 or 1536 float32s) decoded in one call; None when they
    are not that (padded, floats, ragged), for the row-by-row path to decode or to say what is wrong."""
    if not rows or type(rows[0]) is not str or len(set(map(len, rows))) != 1:
        return None
    try:
        raw = pybase64.b64decode("".join(rows), validate=True)  # a padded row's "=" mid-string fails here
    except (ValueError, TypeError):
        return None
    if len(raw) % (4 * n):
        return None
    return np.frombuffer(raw, dtype=np.float32).reshape(n, -1)


def _mean(rows: np.ndarray, weights: Sequence[int] | np.ndarray) -> np.ndarray:
    v: np.ndarray = np.average(rows, axis=0, weights=np.asarray(weights, dtype=np.float64))
    unit: np.ndarray = v / np.linalg.norm(v)
    return unit.astype(np.float32)


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                wait = float(value) * scale
            except ValueError:
                continue
            if 0 <= wait <= 60:
                return wait
    return None

