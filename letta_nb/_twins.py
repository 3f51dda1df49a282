"""The sync and async surfaces of the public API, derived from one implementation.

Each operation is written once as an ``async def _name`` that runs on the runtime loop. In the class body
``name = sync_twin(_name)`` derives the blocking method (submits to the runtime thread and waits; Ctrl-C
cancels cleanly) and ``aname = async_twin(_name)`` the awaitable one (usable with top-level ``await`` in a
cell or inside any event loop). Both carry the implementation's name (``name``/``aname``), docstring and
signature, so ``help()``, Jupyter's ``?`` and ``inspect.signature`` show them like hand-written methods.

Why typed descriptors rather than methods attached with ``setattr`` after the class is made: a type
checker sees ``name = sync_twin(_name)`` in the class body, and :class:`Twin`'s ``__get__`` tells it what
``client.agents.name`` is: a callable with the implementation's parameters (a ``ParamSpec``) returning
its result (blocking) or a coroutine of it (``a``-prefixed). So mypy checks calls and Pylance completes
them, and a misspelled method is an error before it runs. At runtime ``__get__`` hands out a plain
function (on the class) or a bound method (on an instance), so nothing else changes.

A parity test (tests/test_api.py) checks every sync method has its async twin with the same signature;
tests/test_typed_api.py runs mypy on a user script to check the types are the real ones.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from letta_nb.runtime.loop_thread import RuntimeThread

__all__ = ["Twin", "async_twin", "sync_twin"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _RunsOnRuntime(Protocol):
    """What a twin needs from the object it is called on: the runtime thread (every API resource has it)."""

    @property
    def _thread(self) -> RuntimeThread: ...


class Twin(Generic[P, T]):
    """A method derived from an ``async def _op``: calling it on an instance takes ``P`` and returns ``T``
    (the result, or a coroutine of it for an async twin)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]):
        self._fn = fn

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Callable[Concatenate[Any, P], T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, T]: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Callable[..., T]:
        return self._fn.__get__(obj, owner)  # type: ignore[no-any-return]  # a function, or a bound method

    def __repr__(self) -> str:
        return f"<twin {self._fn.__qualname__}>"


def sync_twin(impl: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> Twin[P, R]:
    """The blocking method of ``impl``: runs it on the runtime loop and waits (Ctrl-C cancels it)."""

    def sync(self: _RunsOnRuntime, *args: Any, **kwargs: Any) -> Any:
        return self._thread.run(impl(self, *args, **kwargs))

    return Twin(_named_like(sync, impl, _public_name(impl)))


def async_twin(impl: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> Twin[P, Coroutine[Any, Any, R]]:
    """The awaitable method of ``impl``: runs it on the runtime loop and awaits it from any event loop."""

    async def async_(self: _RunsOnRuntime, *args: Any, **kwargs: Any) -> Any:
        return await self._thread.run_async(impl(self, *args, **kwargs))

    return Twin(_named_like(async_, impl, "a" + _public_name(impl)))


def _public_name(impl: Callable[..., Any]) -> str:
    """``_op`` -> ``op``; only an ``async def`` named ``_op`` can have twins (a slip here fails at import)."""
    name = getattr(impl, "__name__", "")
    if not (inspect.iscoroutinefunction(impl) and name.startswith("_") and not name.startswith("__")):
        raise TypeError(f"a twin is made from an 'async def _op' method, got {impl!r}")
    return name[1:]


def _named_like(fn: Callable[..., Any], impl: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` with ``impl``'s docstring, module, annotations and signature, under the public ``name``.

    ``__wrapped__`` (set by ``update_wrapper``) stays: ``typing.get_type_hints`` and ``inspect.getsource``
    follow it to the implementation; ``__signature__`` stops ``inspect.signature`` there first."""
    functools.update_wrapper(fn, impl)
    fn.__name__ = name
    fn.__qualname__ = f"{impl.__qualname__.rpartition('.')[0]}.{name}".lstrip(".")
    fn.__signature__ = inspect.signature(impl)  # type: ignore[attr-defined]
    return fn
