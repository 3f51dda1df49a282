"""Looking into the store from the API: read-only SQL as a DataFrame, and where the store is.

The SQL goes through the store's own sqlite3 module on the runtime loop (a second SQLite library opening
the same file in this process can break the runtime's locks; see store/store.py ``query``). pandas is
imported only here, when a query is made, so loading the extension stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from letta_nb.runtime.runtime import Runtime

__all__ = ["location", "query"]


async def query(rt: Runtime, sql: str, params: Any = None) -> pd.DataFrame:
    """One read-only statement's rows as a pandas DataFrame; InvalidArgumentError for writes or bad SQL."""
    columns, rows = await rt.store.query(sql, params)
    import pandas as pd

    frame: pd.DataFrame = pd.DataFrame.from_records(rows, columns=columns)  # (pandas-stubs: Any from records)
    return frame


def location(rt: Runtime) -> str:
    """The store's location as shown to the user (a path, ``:memory:`` or a URL without its password)."""
    return rt.store.location.display
