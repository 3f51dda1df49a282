"""What every resource of the public API shares: the client it belongs to, its runtime thread and runtime.

Resources are thin shells (letta_nb/client.py explains the twins): they check argument shapes
(:mod:`letta_nb._client_args`) and call one runtime service each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from letta_nb._client_args import positive_int
from letta_nb.errors import InvalidArgumentError
from letta_nb.runtime.runtime import Runtime
from letta_nb.schemas import AgentState

if TYPE_CHECKING:
    from letta_nb.client import Client

__all__ = ["AgentRef", "StrPath"]

AgentRef: TypeAlias = str | AgentState
"""How the API names an agent: its name, its id, or the AgentState itself."""
StrPath: TypeAlias = str | os.PathLike[str]

_MAX_ROWS = 1_000_000_000  # a row count SQLite's 64-bit integers hold with room to spare
_MAX_TOP_K = 10_000
T = TypeVar("T")


class _Resource:
    def __init__(self, client: Client):
        self._client = client
        self._thread = client._thread

    @property
    def _rt(self) -> Runtime:
        return self._client._runtime


def _page(items: Sequence[T], *, before: str | None = None, after: str | None = None, limit: int | None = None,
          order: str | None = None, what: str = "item") -> list[T]:
    """letta_client's cursor pagination over ``items`` (oldest first, each with an ``.id``): ``order`` "asc" or
    "desc" (None: oldest first, and ``limit`` keeps the newest, letta_nb's own ``list``); ``after``/``before``
    an id, exclusive, in that order."""
    if order not in (None, "asc", "desc"):
        raise InvalidArgumentError(f"order must be 'asc' or 'desc', got {order!r}")
    if limit is not None:
        positive_int(limit, "limit", hi=_MAX_ROWS)
    seq = list(reversed(items)) if order == "desc" else list(items)
    ids = [getattr(x, "id", None) for x in seq]
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and cursor not in ids:
            raise InvalidArgumentError(f"{name}={cursor!r} is not the id of any {what} here; pass the id of one "
                                       "from the previous page.")
    lo = ids.index(after) + 1 if after is not None else 0
    hi = ids.index(before) if before is not None else len(seq)
    seq = seq[lo:hi]
    if limit is not None:
        seq = seq[-limit:] if order is None else seq[:limit]
    return seq
