"""Read-only SQL over the store for people: what ``client.query(sql, params)`` runs.

Why it exists: looking at the store from a notebook is natural (``pd.read_sql(..., sqlite3.connect(path))``),
and it was how users corrupted it while letta_nb ran on a second SQLite library (see driver.py).
This is the supported way to look: a fresh connection of the *runtime's own* sqlite3 module, so one
library holds every lock on the file, that can only read.

Read-only is enforced twice, because each guard alone lets something through (measured on SQLite 3.40):
``PRAGMA query_only`` refuses writes to the database but still runs ``ATTACH`` (which creates the
attached file), ``VACUUM INTO`` (which writes its target), ``PRAGMA wal_checkpoint(TRUNCATE)`` and
``PRAGMA optimize``; an authorizer admits only reads (SELECT, column reads, functions, recursive CTEs)
and pragmas from a list that only report, and denies everything else before the statement runs. A
user's write would also bypass the runtime's leases, caches and version counters: changes go through
the API. Every failure becomes an :class:`InvalidArgumentError` carrying SQLite's own message.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from letta_nb.errors import InvalidArgumentError
from letta_nb.store.sqlite.driver import connect_raw, sqlite_module

__all__ = ["ReadOnlyQuery"]

# Pragmas that only report (with or without an argument); any other pragma may change state.
_REPORTING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "integrity_check", "quick_check", "database_list", "collation_list", "function_list",
    "module_list", "pragma_list", "compile_options",
})
# Pragmas that report when read and change state when given a value.
_READABLE_PRAGMAS = frozenset({
    "page_count", "page_size", "freelist_count", "user_version", "schema_version", "application_id",
    "journal_mode", "encoding", "auto_vacuum", "data_version", "foreign_keys", "busy_timeout", "cache_size",
})
_READ_ACTIONS = ("SQLITE_SELECT", "SQLITE_READ", "SQLITE_FUNCTION", "SQLITE_RECURSIVE")
_HOW = "Only reads run here (SELECT, WITH, reporting PRAGMAs such as table_info); change data through the API."


class ReadOnlyQuery:
    """One read-only statement on its own connection. :meth:`run` blocks (call it in a worker thread);
    :meth:`interrupt` may be called from any thread to stop it."""

    def __init__(self, path: str):
        self._path = path
        self._conn: Any = None
        self._lock = threading.Lock()
        self._interrupted = False
        self._denied: list[str] = []

    def run(self, sql: Any, params: Any = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) of ``sql``; InvalidArgumentError for a write, bad SQL or bad params."""
        if not isinstance(sql, str):
            raise InvalidArgumentError(f"client.query: sql must be a string of SQL, got {type(sql).__name__}")
        bound = _params(params)
        module = sqlite_module()
        conn = connect_raw(self._path)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.set_authorizer(self._authorize)
            with self._lock:
                if self._interrupted:
                    raise InvalidArgumentError("client.query was cancelled before it ran")
                self._conn = conn
            cursor = conn.execute(sql, bound)
            columns = [d[0] for d in cursor.description or ()]
            return columns, cursor.fetchall()
        except module.Error as e:
            raise self._explain(e) from None
        finally:
            with self._lock:
                self._conn = None
            conn.close()

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            if self._conn is not None:
                self._conn.interrupt()

    def _authorize(self, action: int, arg1: Any, arg2: Any, _db: Any, _trigger: Any) -> int:
        module = sqlite_module()
        ok: int = module.SQLITE_OK
        deny: int = module.SQLITE_DENY
        if action in {getattr(module, name) for name in _READ_ACTIONS}:
            return ok
        if action == module.SQLITE_PRAGMA:
            name = str(arg1).lower()
            if name in _REPORTING_PRAGMAS or (name in _READABLE_PRAGMAS and arg2 is None):
                return ok
            self._denied.append(f"PRAGMA {name}" + (f" = {arg2}" if arg2 is not None else ""))
            return deny
        self._denied.append(_action_name(module, action, arg1))
        return deny

    def _explain(self, e: Exception) -> InvalidArgumentError:
        message = str(e)
        if self._denied or "readonly database" in message:
            what = f" ({self._denied[0]})" if self._denied else ""
            return InvalidArgumentError(f"client.query is read-only: SQLite refused this statement{what}: {message}. "
                                        f"{_HOW}")
        if "one statement at a time" in message:
            return InvalidArgumentError(f"client.query runs one statement at a time: {message} Split the SQL into "
                                        "separate calls.")
        if "binding" in message.lower() or "bindings" in message.lower():
            return InvalidArgumentError(f"client.query: params do not fit the SQL's placeholders: {message}. Pass "
                                        "one value (str, int, float, bytes or None) per '?', or a dict for ':name'.")
        if self._interrupted or message == "interrupted":
            return InvalidArgumentError("client.query was interrupted before it finished")
        return InvalidArgumentError(f"client.query: SQLite rejected the SQL: {message}. {_HOW}")


def _params(params: Any) -> Sequence[Any] | Mapping[str, Any]:
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return params
    if isinstance(params, (list, tuple)):
        return params
    raise InvalidArgumentError(f"client.query: params must be a list or tuple (for '?') or a dict (for ':name'), "
                               f"got {type(params).__name__}")


_ACTIONS = ("CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
            "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
            "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW",
            "INSERT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
            "CREATE_VTABLE", "DROP_VTABLE", "SAVEPOINT")


def _action_name(module: Any, action: int, target: Any) -> str:
    """An authorizer action code as words, e.g. 'DELETE messages' (error codes share these numbers, so
    only the action names are looked up)."""
    for name in _ACTIONS:
        if getattr(module, f"SQLITE_{name}", None) == action:
            words = name.replace("_", " ")
            return f"{words} {target}" if target else words
    return f"authorizer action {action}"
