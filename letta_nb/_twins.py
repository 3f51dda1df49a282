"""The sync and async surfaces of the public API, derived from one implementation.

Each operation is written once as an ``async def _name`` that runs on the runtime loop; :func:`twins`
derives the blocking ``name`` (submits to the runtime thread and waits; Ctrl-C cancels cleanly) and the
awaitable ``aname`` (usable with top-level ``await`` in a cell or inside any event loop). A parity test
(tests/test_api.py) checks every sync method has its async twin with the same signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["twins"]


def twins(cls: type) -> type:
    """For each ``async def _op`` (public ops only, listed in ``cls._ops``) add ``op`` and ``aop``."""
    for op in cls._ops:
        impl = getattr(cls, f"_{op}")

        def sync(self: Any, *args: Any, __impl: Callable = impl, **kwargs: Any) -> Any:
            return self._thread.run(__impl(self, *args, **kwargs))

        async def async_(self: Any, *args: Any, __impl: Callable = impl, **kwargs: Any) -> Any:
            return await self._thread.run_async(__impl(self, *args, **kwargs))

        for fn, name in ((sync, op), (async_, f"a{op}")):
            functools.update_wrapper(fn, impl)
            fn.__name__ = fn.__qualname__ = name
            fn.__signature__ = inspect.signature(impl)  # type: ignore[attr-defined]
            del fn.__wrapped__
            setattr(cls, name, fn)
    return cls
