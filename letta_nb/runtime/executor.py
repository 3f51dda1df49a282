"""Executing the tool calls of one model turn.

The agent loop hands over everything the model asked for in a turn and gets back exactly one
:class:`ToolResult` per call, in call order. Whatever goes wrong with a tool (unknown name, malformed or
ill-typed arguments, an exception, a timeout) becomes an error result whose ``content`` tells the model what
to fix, because the model, not the user, is the one who can retry. That includes the BaseExceptions a tool
raises (KeyboardInterrupt, SystemExit, GeneratorExit, its own CancelledError): they are the tool's, and let
through they would kill the runtime loop. Only our cancellation propagates: the turn's task was cancelled
(the user stopped the step, or the tool's timeout fired), which ``Task.cancelling()`` tells apart from a
tool that merely raised ``asyncio.CancelledError``.

Scheduling: calls run in order, except that a maximal run of consecutive ``parallel_safe`` calls runs
concurrently (at most ``max_parallel`` of that run at once; the cap is per ``execute`` call, so one agent's
batch cannot throttle another agent's); a call that is not parallel-safe starts only after every
earlier call has finished, and later calls wait for it. An ``async def`` tool whose code never awaits
(send_message, the core-memory tools) runs inline, with no task or timer (:func:`_never_suspends`); other
coroutines run in a task of their own under the tool's timeout. Sync tools run in this executor's own thread pool,
so a hung tool cannot starve asyncio's default pool. A thread cannot be killed: after a timeout the result
is reported but the thread runs on (and holds a pool slot, and delays interpreter exit) until the function
returns. Use ``sandbox=True`` for untrusted code or code that may hang; sandboxed processes are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dis
import functools
import inspect
import json
import re
import time
import types
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from letta_nb._text import clean_text
from letta_nb.errors import InvalidArgumentError, RuntimeClosedError, ToolNotFoundError
from letta_nb.llm.base import ToolCall
from letta_nb.runtime.sandbox import run_in_sandbox
from letta_nb.runtime.tool_args import validate_arguments
from letta_nb.runtime.tool_schema import ToolSpec, function_from_source

__all__ = ["ToolResult", "ToolExecutor"]

_RAISED = re.compile(r"^(?P<type>[A-Za-z_][\w.]*): (?P<message>.*)$", re.S)  # "ValueError: bad x" from the sandbox


_timeout = getattr(asyncio, "timeout", None)


@dataclass
class ToolResult:
    """The outcome of one tool call. ``content`` is the text sent back to the model."""

    call_id: str
    name: str
    status: Literal["success", "error"]
    content: str
    value: Any
    duration_ms: float
    started_at: float
    error_type: str | None = None
    stdout: str = ""  # what a sandboxed tool printed (in-process tools print wherever the process prints)


class _ToolFailure(Exception):
    """Internal: a call failed in a way the model should hear about as ``error_type: message``."""

    def __init__(self, error_type: str, message: str, stdout: str = ""):
        message = clean_text(message)  # a tool's own exception text may hold lone surrogates
        super().__init__(message)
        self.error_type, self.message, self.stdout = error_type, message, stdout


class ToolExecutor:
    """Runs batches of tool calls; one instance is shared by the agents of a runtime.

    ``on_result`` is called on the event loop as each call finishes (completion order within a parallel
    run), so it must not block; its exceptions are swallowed. ``max_threads`` sizes the pool that runs sync
    tools for every agent using this executor.
    """

    def __init__(
        self,
        *,
        max_parallel: int = 8,
        on_result: Callable[[ToolResult], None] | None = None,
        max_threads: int = 32,
    ):
        if max_parallel < 1 or max_threads < 1:
            raise InvalidArgumentError(
                f"max_parallel and max_threads must be at least 1, got {max_parallel} and {max_threads}."
            )
        self.max_parallel = max_parallel
        self.on_result = on_result
        self._max_threads = max_threads
        self._pool: ThreadPoolExecutor | None = None
        self._hydrated: dict[tuple[str, str], Callable[..., Any]] = {}
        self._closed = False

    async def __aenter__(self) -> ToolExecutor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def execute(
        self,
        calls: Sequence[ToolCall],
        tools: Mapping[str, ToolSpec],
        injected: Mapping[str, Any] | None = None,
    ) -> list[ToolResult]:
        """Run ``calls`` against ``tools``; one result per call, in call order (see the module docstring)."""
        if self._closed:
            raise RuntimeClosedError("This ToolExecutor has been closed; create a new one.")
        injected = injected or {}
        results: list[ToolResult] = []
        i = 0
        while i < len(calls):
            j = i + 1
            if self._parallel_safe(calls[i], tools):
                while j < len(calls) and self._parallel_safe(calls[j], tools):
                    j += 1
            if j - i == 1:
                results.append(await self._run_one(calls[i], tools, injected))
            else:
                limit = asyncio.Semaphore(self.max_parallel)
                batch = (self._run_limited(limit, c, tools, injected) for c in calls[i:j])
                results.extend(await asyncio.gather(*batch))
            i = j
        return results

    async def aclose(self) -> None:
        """Stop accepting work and release the thread pool (threads of hung tools are abandoned, not joined)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- one call --------------------------------------------------------------------------------------

    @staticmethod
    def _parallel_safe(call: ToolCall, tools: Mapping[str, ToolSpec]) -> bool:
        spec = tools.get(call.name)
        return spec is None or spec.parallel_safe  # an unknown tool only produces an error result

    async def _run_limited(self, limit: asyncio.Semaphore, call: ToolCall, tools: Mapping[str, ToolSpec],
                           injected: Mapping[str, Any]) -> ToolResult:
        async with limit:
            return await self._run_one(call, tools, injected)

    async def _run_one(self, call: ToolCall, tools: Mapping[str, ToolSpec], injected: Mapping[str, Any]) -> ToolResult:
        started_at, start = time.time(), time.perf_counter()
        spec = tools.get(call.name)
        limit = spec.return_char_limit if spec is not None else 20000
        try:
            if spec is None:
                raise _ToolFailure("ToolNotFoundError", _unknown_tool_message(call.name, tools))
            try:
                arguments = validate_arguments(spec, call.parsed_arguments())
            except ValueError as e:  # InvalidArgumentError is a ValueError, as is a JSON parse failure
                raise _ToolFailure("InvalidArgumentError", str(e)) from None
            except Exception as e:  # e.g. RecursionError on absurdly nested JSON: still the model's to fix
                raise _ToolFailure(type(e).__name__, f"arguments could not be read: {e}") from None
            value, stdout = await self._invoke(spec, arguments, injected)
        except _ToolFailure as failure:
            content = _truncate(f"{failure.error_type}: {failure.message}", limit)
            result = ToolResult(call.id, call.name, "error", content, None, _ms_since(start), started_at,
                                failure.error_type, failure.stdout)
        else:
            result = ToolResult(call.id, call.name, "success", _truncate(_to_text(value), limit), value,
                                _ms_since(start), started_at, None, stdout)
        if self.on_result is not None:
            with contextlib.suppress(Exception):  # an observer (widget, metrics) must not change what the model sees
                self.on_result(result)
        return result

    async def _invoke(self, spec: ToolSpec, arguments: dict[str, Any],
                      injected: Mapping[str, Any]) -> tuple[Any, str]:
        """Call the tool under its timeout; tool-side problems come back as :class:`_ToolFailure`."""
        if spec.sandbox:
            if spec.source is None:
                raise _ToolFailure("ToolSchemaError", f"tool {spec.name!r} is sandboxed but has no source to run")
            outcome = await run_in_sandbox(spec.source, spec.name, arguments, timeout=spec.timeout,
                                           network=spec.network, strict=spec.sandbox == "strict")
            if not outcome.ok:
                error = outcome.error or "unknown error"
                raised = _RAISED.match(error)
                if raised:
                    raise _ToolFailure(raised["type"], raised["message"], outcome.stdout)
                kind = "TimeoutError" if error.startswith("timed out") else "SandboxError"
                raise _ToolFailure(kind, error, outcome.stdout)
            return outcome.value, outcome.stdout
        func = self._function(spec)
        kwargs = {**arguments, **{k: injected[k] for k in spec.injected if k in injected}}
        if type(func) is types.FunctionType and _never_suspends(func):
            return _run_inline(func, kwargs), ""  # no await: nothing for a timer to interrupt, no task needed
        try:
            if _timeout is not None:  # 3.11+: no extra task per call (wait_for makes one)
                async with _timeout(spec.timeout):
                    return await self._call(func, kwargs), ""
            return await asyncio.wait_for(self._call(func, kwargs), spec.timeout), ""
        except asyncio.TimeoutError:  # only ours: _call wraps the tool's own exceptions
            raise _ToolFailure("TimeoutError", f"timed out after {spec.timeout:g}s") from None

    async def _call(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(func):
            try:
                coroutine = func(**kwargs)  # runs no tool code yet, unless a decorator does
            except BaseException as e:  # noqa: BLE001
                raise _ToolFailure(type(e).__name__, str(e)) from None
            return await _in_own_task(coroutine)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_threads, thread_name_prefix="letta_nb-tool")
        # Copy the context so tracing spans and other contextvars follow the call into the thread.
        call = functools.partial(contextvars.copy_context().run, _outcome, func, kwargs)
        ok, value = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        if not ok:  # nothing raised in the thread is our cancellation: it is all the tool's
            raise _ToolFailure(type(value).__name__, str(value))
        if inspect.isawaitable(value):
            value = await _in_own_task(value)
        return value

    def _function(self, spec: ToolSpec) -> Callable[..., Any]:
        if spec.func is not None:
            return spec.func
        if spec.source is None:
            raise _ToolFailure("ToolSchemaError", f"tool {spec.name!r} has neither a function nor source to run")
        key = (spec.name, spec.source)
        if key not in self._hydrated:
            try:
                self._hydrated[key] = function_from_source(spec.source, spec.name)
            except BaseException as e:  # noqa: BLE001 - the tool module's own code raised (sync: not our cancel)
                raise _ToolFailure(type(e).__name__, str(e)) from None
        return self._hydrated[key]


# How a coroutine's own code suspends (await, async for, async with), in CPython 3.10 to 3.13.
_SUSPENDING = frozenset({"GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "SETUP_ASYNC_WITH",
                         "END_ASYNC_FOR", "SEND", "YIELD_VALUE", "YIELD_FROM", "ASYNC_GEN_WRAP"})


@functools.lru_cache(maxsize=1024)
def _never_suspends(func: types.FunctionType) -> bool:
    """Whether ``func`` is an ``async def`` whose own code never awaits (send_message, the core-memory tools).

    Its coroutine runs to its end on its first step: a timeout could not fire inside it (a timer fires only
    at an await) and it awaits no future that could hand it a GeneratorExit, so it needs neither
    ``asyncio.timeout`` nor a task of its own, which cost a timer, a task and two passes of the event loop
    a call (issue 19). Read once per function from its bytecode; nested functions cannot suspend it."""
    if not func.__code__.co_flags & inspect.CO_COROUTINE:
        return False
    return not any(instruction.opname in _SUSPENDING for instruction in dis.get_instructions(func))


def _run_inline(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a coroutine that never suspends (:func:`_never_suspends`) to its end now, in a copy of the context
    (as its own task would); what it raises is the tool's, like in :func:`_guarded`."""
    try:
        coroutine = func(**kwargs)
        contextvars.copy_context().run(coroutine.send, None)
    except StopIteration as done:
        return done.value
    except asyncio.CancelledError as e:  # nothing awaited: it cannot be our cancellation
        raise _ToolFailure("CancelledError", str(e) or "the tool raised asyncio.CancelledError") from None
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt, SystemExit, GeneratorExit: the tool's own
        raise _ToolFailure(type(e).__name__, str(e)) from None
    coroutine.close()  # unreachable unless the bytecode read above missed a way to suspend
    raise _ToolFailure("RuntimeError", f"tool {func.__name__!r} suspended where its code has no await")


def _outcome(func: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[bool, Any]:
    """Run a sync tool in its thread; whatever it raises comes back as a value, never through a future
    (a future holding GeneratorExit would close the awaiting coroutines instead of raising in them)."""
    try:
        return True, func(**kwargs)
    except BaseException as e:  # noqa: BLE001 - the tool's own, KeyboardInterrupt and SystemExit included
        return False, e


async def _in_own_task(awaitable: Any) -> Any:
    """Await a tool's coroutine (or the awaitable a sync tool returned) in a task of its own, ~10 us a call.

    Inline, a GeneratorExit the tool lets reach the event loop (from a future it awaited) is *thrown* into
    the awaiting coroutines, which closes the whole chain up to the turn's task without running our
    handlers. In its own task, :func:`_guarded` is the top of the chain and sees it like any raise.
    """
    return await asyncio.ensure_future(_guarded(awaitable))


async def _guarded(awaitable: Any) -> Any:
    try:
        return await awaitable
    except asyncio.CancelledError as e:
        if _cancelled_by_us():
            raise
        raise _ToolFailure("CancelledError", str(e) or "the tool raised asyncio.CancelledError") from None
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt, SystemExit, GeneratorExit: the tool's own
        raise _ToolFailure(type(e).__name__, str(e)) from None


def _cancelled_by_us() -> bool:
    """Whether the running task was cancelled (a Stop, Ctrl-C or a timeout), rather than a tool raising."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # 3.11+; before that every CancelledError is taken as ours
    return task is None or cancelling is None or cancelling() > 0


def _unknown_tool_message(name: str, tools: Mapping[str, ToolSpec]) -> str:
    error = ToolNotFoundError(name, tools)
    message = str(error)
    if error.suggestions:  # ToolNotFoundError lists the known tools only when nothing is close
        message += f" Available tools: {', '.join(sorted(tools))}."
    return message


def _to_text(value: Any) -> str:
    """What the model reads of a tool's return value, as valid Unicode (a lone surrogate becomes U+FFFD)."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None:
        return "None"
    try:
        return clean_text(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return clean_text(repr(value))


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated {len(text) - limit} chars]"


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
